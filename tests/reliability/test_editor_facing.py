"""What an editor sees of the server besides completions: when it asks for them, and what
the server writes on stderr (Neovim records every stderr line of a server as an error)."""

import re
import time

import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from tests.conftest import FIXTURES
from tests.server_calls import command, indexed

LEVELS = (b" DEBUG ", b" INFO ", b" WARNING ", b" ERROR ")
WARNING_OR_WORSE = re.compile(rb"^\d{4}-\d\d-\d\d [\d:,]+ (WARNING|ERROR|CRITICAL) ")
AT_EXIT = b"resource_tracker"
"""multiprocessing's resource tracker warns once the server has ended (it ends with os._exit
and leaves the encoder pool's semaphores to the tracker): known, not the server's logging."""


def _session(server_args: list[str], root) -> tuple[dict, list[bytes]]:
    """Initialize a server on ``root``, shut it down; its initialize result and stderr lines."""
    peer = RpcPeer(*server_args)
    try:
        result = peer.initialize(root.as_uri())["result"]
        peer.request("shutdown", None)
        peer.notify("exit", None)
        assert peer.wait(30) == 0
        assert peer.log_closed.wait(10)
        return result, peer.stderr_lines
    finally:
        peer.close()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "app.py").write_text("def f():\n    return 1\n")
    return tmp_path / "ws"


def test_completion_is_not_triggered_by_a_space(server_args, root):
    result, _ = _session(server_args, root)
    triggers = result["capabilities"]["completionProvider"]["triggerCharacters"]
    assert "." in triggers
    assert " " not in triggers


def test_stderr_carries_warnings_only_unless_asked_for_more(server_args, root):
    _, quiet = _session(server_args, root)
    assert not [line for line in quiet if b" INFO " in line or b" DEBUG " in line], quiet
    assert any(b" WARNING " in line or b" ERROR " in line for line in quiet), "the missing model must still be told"
    _, verbose = _session([*server_args, "-v"], root)
    assert any(b" INFO " in line for line in verbose), verbose


def test_a_log_file_still_records_the_server_s_progress(server_args, root, tmp_path):
    log = tmp_path / "server.log"
    _, stderr = _session([*server_args, "--log-file", str(log)], root)
    assert "server stopped (exit code 0)" in log.read_text()
    assert not [line for line in stderr if any(level in line for level in LEVELS)], stderr


def test_background_embedding_writes_only_warnings_on_stderr(server_args):
    """The retriever runs in a child process that shares the server's stderr: its library
    progress bars must not reach the editor."""
    peer = RpcPeer(*server_args)
    try:
        indexed(peer, FIXTURES / "workspace")
        deadline = time.monotonic() + 120
        while command(peer, "aligncoder.indexStatus")["embedded"] == 0:
            assert time.monotonic() < deadline, "no snippet was embedded"
            time.sleep(0.2)
        peer.request("shutdown", None)
        peer.notify("exit", None)
        assert peer.wait(30) == 0
        assert peer.log_closed.wait(10)
    finally:
        peer.close()
    lines = b"".join(peer.stderr_lines).split(b"\n")
    lines = lines[:next((i for i, line in enumerate(lines) if AT_EXIT in line), len(lines))]
    assert all(WARNING_OR_WORSE.match(line) for line in lines if line.strip()), lines
