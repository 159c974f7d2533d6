"""The LSP lifecycle of the real server process: nothing before `initialize`, one
`initialize` only, an error reply for invalid params on every request it serves, and a
prompt exit in every state (exit, end of input, death of the parent process)."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from tests.reliability.conftest import WORKSPACE, index_status

SERVER_NOT_INITIALIZED, INVALID_REQUEST, INVALID_PARAMS = -32002, -32600, -32602
GHOST = WORKSPACE / "ghost.py"  # never on disk: only an open buffer makes it known
MAIN = WORKSPACE / "app" / "main.py"


def _completion(uri: str = MAIN.as_uri()) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}


def _open(peer: RpcPeer, path=GHOST, text: str = "import os\n") -> None:
    peer.notify("textDocument/didOpen", {"textDocument": {
        "uri": path.as_uri(), "languageId": "python", "version": 1, "text": text}})


@pytest.mark.parametrize("method, params", [
    ("textDocument/completion", _completion()),
    ("workspace/executeCommand", {"command": "aligncoder.indexStatus"}),
    ("shutdown", None),
])
def test_requests_before_initialize_are_answered_server_not_initialized(peer, method, params):
    assert peer.request(method, params, timeout=20)["error"]["code"] == SERVER_NOT_INITIALIZED
    assert "result" in peer.initialize(WORKSPACE.as_uri())
    index_status(peer)


def test_notifications_before_initialize_are_dropped(peer):
    _open(peer)
    peer.initialize(WORKSPACE.as_uri())
    assert peer.request("textDocument/completion", _completion(GHOST.as_uri()))["error"]["code"] == INVALID_PARAMS


def test_exit_before_initialize_ends_the_server(peer):
    peer.notify("exit")
    assert peer.wait(10) == 1


def test_second_initialize_is_rejected_and_keeps_open_buffers(peer):
    peer.initialize(WORKSPACE.as_uri())
    _open(peer)
    assert peer.request("textDocument/completion", _completion(GHOST.as_uri()))["result"]["items"] == []
    again = peer.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    assert again["error"]["code"] == INVALID_REQUEST
    assert peer.request("textDocument/completion", _completion(GHOST.as_uri()))["result"]["items"] == []
    index_status(peer)


@pytest.mark.parametrize("method, params", [
    ("initialize", {"rootUri": None}),
    ("initialize", {"processId": "me", "capabilities": {}}),
    ("textDocument/completion", None),
    ("textDocument/completion", {"textDocument": {"uri": MAIN.as_uri()}}),
    ("textDocument/completion", {"textDocument": {"uri": MAIN.as_uri()}, "position": {"line": "a", "character": 0}}),
    ("textDocument/completion", _completion((WORKSPACE / "missing.py").as_uri())),
    ("textDocument/inlineCompletion", _completion()),
    ("workspace/executeCommand", {}),
    ("workspace/executeCommand", {"command": "no.such.command"}),
    ("workspace/executeCommand", {"command": "aligncoder.search"}),
    ("workspace/executeCommand", {"command": "aligncoder.search", "arguments": ["query", "many"]}),
    ("workspace/executeCommand", {"command": "aligncoder.search", "arguments": ["query", 3, "extra"]}),
])
def test_invalid_params_get_an_error_reply(peer, method, params):
    """Each request the server serves, with params it cannot use: an error reply, never
    silence or an internal error."""
    if method != "initialize":
        peer.initialize(WORKSPACE.as_uri())
    reply = peer.request(method, params, timeout=20)
    assert reply["error"]["code"] == INVALID_PARAMS, reply
    assert "data" not in reply["error"] or "traceback" not in json.dumps(reply["error"]["data"])
    if method == "initialize":  # a rejected initialize leaves the server uninitialized
        assert "result" in peer.initialize(WORKSPACE.as_uri())
    index_status(peer)


@pytest.mark.parametrize("method", [
    "initialized", "textDocument/didOpen", "textDocument/didChange", "textDocument/didSave",
    "textDocument/didClose", "workspace/didChangeConfiguration", "$/cancelRequest", "$/setTrace",
    "workspace/didChangeWorkspaceFolders", "window/workDoneProgress/cancel",
])
def test_invalid_notifications_are_logged_and_the_server_goes_on(peer, method):
    peer.initialize(WORKSPACE.as_uri())
    peer.notify(method, {"textDocument": 5, "settings": [], "id": {}, "value": 3, "event": 1, "token": []})
    index_status(peer)
    assert peer.process.poll() is None


def test_server_exits_when_its_parent_dies(server_args):
    """An editor killed with SIGKILL leaves the server's pipes open (another process holds
    them); the server must notice the parent's death through ``processId``."""
    launcher = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
    peer = RpcPeer(*server_args, launcher=launcher)
    parent = peer.process
    server_pid = None
    try:
        assert "result" in peer.initialize(WORKSPACE.as_uri(), process_id=parent.pid)
        index_status(peer)
        server_pid = int(Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()[0])
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert peer.closed.wait(15), "the server outlived its parent"
    finally:
        peer.close()
        if server_pid is not None and Path(f"/proc/{server_pid}").exists():
            os.kill(server_pid, signal.SIGKILL)


def test_unknown_parent_process_does_not_stop_the_server(peer):
    """A client in another pid namespace (a container) sends a pid we cannot see."""
    peer.initialize(WORKSPACE.as_uri(), process_id=2**22 - 3)
    time.sleep(3)
    index_status(peer)


@pytest.fixture(scope="module")
def big_workspace(tmp_path_factory):
    """20,000 small Python files: indexing them takes far longer than the exit budget."""
    root = tmp_path_factory.mktemp("big")
    for package in range(200):
        folder = root / f"pkg{package}"
        folder.mkdir()
        for number in range(100):
            (folder / f"mod{number}.py").write_text(
                f"def function_{package}_{number}(value):\n    return value * {number} + {package}\n")
    return root


def _indexing(peer: RpcPeer, root) -> None:
    """Initialize on ``root`` and return once the index build has visibly started."""
    capabilities = {"window": {"workDoneProgress": True}}
    assert "result" in peer.initialize(root.as_uri(), capabilities)
    peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "report" and p["value"].get("percentage", 0) > 0,
                  timeout=120)


def _exit(peer: RpcPeer) -> None:
    peer.notify("exit")


def _shutdown_and_exit(peer: RpcPeer) -> None:
    assert peer.request("shutdown", timeout=10)["result"] is None
    peer.notify("exit")


def _close_input(peer: RpcPeer) -> None:
    peer.process.stdin.close()


@pytest.mark.parametrize("end, code", [(_exit, 1), (_shutdown_and_exit, 0), (_close_input, 1)],
                         ids=["exit", "shutdown-exit", "end-of-input"])
def test_the_process_ends_within_2_seconds_during_the_index_build(server_args, big_workspace, end, code):
    peer = RpcPeer(*server_args)
    try:
        _indexing(peer, big_workspace)
        end(peer)
        started = time.monotonic()
        assert peer.wait(30) == code
        assert time.monotonic() - started < 2.0
        assert not any(m["method"] == "$/progress" and m["params"]["value"]["kind"] == "end"
                       for m in peer.notifications), "the build had finished: nothing was tested"
    finally:
        peer.close()


def test_the_process_ends_within_2_seconds_during_an_embedding_run(server_args, tmp_path):
    """The retriever model loads and embeds in a worker process; `exit` must not wait for it."""
    for number in range(120):
        (tmp_path / f"mod{number}.py").write_text(f"def function_{number}(value):\n    return value * {number}\n")
    peer = RpcPeer(*server_args)
    try:
        assert "result" in peer.initialize(tmp_path.as_uri(), {"window": {"workDoneProgress": True}})
        peer.wait_for("$/progress", lambda p: p["value"].get("title") == "Embedding snippets", timeout=120)
        peer.notify("exit")
        started = time.monotonic()
        assert peer.wait(60) == 1
        assert time.monotonic() - started < 2.0
        assert peer.log_closed.wait(5), "a worker process outlived the server and holds its stderr"
    finally:
        peer.close()
