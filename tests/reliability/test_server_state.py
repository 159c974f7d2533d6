"""The server's own state under odd documents, settings changes and a long index build,
checked through the real server process (no model is loaded: completions answer empty)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from aligncoder_lsp.config import Settings
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.server.features import STATUS_COMMAND, build_server
from tests.server_calls import command, eventually, indexed, search_paths

INVALID_PARAMS = -32602








def _open(peer: RpcPeer, uri: str, text: str) -> None:
    peer.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": text}})


def _completion(peer: RpcPeer, uri: str, line: int = 1, character: int = 4) -> dict:
    return peer.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character}})


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "alpha.py").write_text("def alphaonly(x):\n    return x + 1\n")
    for number in range(8):  # BM25 needs a few documents for a term to weigh
        (root / "pkg" / f"filler{number}.py").write_text(f"value_{number} = {number}\n")
    return root






def test_a_percent_encoded_uri_keeps_its_unsaved_buffer(peer, workspace):
    """Editors percent-encode spaces and non-ASCII letters; the buffer must still be found."""
    indexed(peer, workspace)
    unsaved = workspace / "my dir" / "café module.py"  # not on disk: only the buffer has it
    uri = unsaved.as_uri()
    assert "%20" in uri and "%C3%A9" in uri
    _open(peer, uri, "def bufferonlyname():\n    return 1\n")
    eventually(lambda: search_paths(peer, "bufferonlyname") == {"my dir/café module.py"})
    response = _completion(peer, uri)
    assert response.get("result") == {"isIncomplete": False, "items": []}, response


def test_an_unopened_file_outside_the_workspace_is_never_read(peer, workspace, tmp_path):
    secret = tmp_path / "outside" / "secret.py"
    secret.parent.mkdir()
    secret.write_text("password = 'hunter2'\nvalue = \n")
    uri = f"{workspace.as_uri()}/../outside/secret.py"
    indexed(peer, workspace)
    response = _completion(peer, uri)
    assert response["error"]["code"] == INVALID_PARAMS
    assert "hunter2" not in str(response)


def test_an_opened_ignored_file_is_not_indexed(peer, workspace):
    """A file under .venv/ (always ignored) stays out of the index even while open."""
    indexed(peer, workspace)
    ignored = workspace / ".venv" / "lib" / "vendored.py"
    ignored.parent.mkdir(parents=True)
    ignored.write_text("def vendoredonly():\n    pass\n")
    _open(peer, ignored.as_uri(), ignored.read_text())
    _open(peer, (workspace / "pkg" / "new.py").as_uri(), "def laterbuffer():\n    pass\n")
    eventually(lambda: search_paths(peer, "laterbuffer") == {"pkg/new.py"})  # re-indexing runs in order
    assert search_paths(peer, "vendoredonly") == set()


def test_index_settings_changed_at_run_time_rebuild_the_index(peer, workspace):
    (workspace / "pkg" / "long.py").write_text("".join(f"def f{n}():\n    return {n}\n\n" for n in range(30)))
    indexed(peer, workspace, {"index": {"blockLines": 15}})
    before = command(peer, "aligncoder.indexStatus")["snippets"]
    peer.notify("workspace/didChangeConfiguration", {"settings": {"index": {"blockLines": 3}}})
    eventually(lambda: command(peer, "aligncoder.indexStatus")["snippets"] > before)


def test_the_status_command_never_waits_for_the_index_lock():
    """Index work (a save, a checkout storm) may hold the index lock for long; the event
    loop must not wait for it."""
    server = build_server(Settings())
    status = server.protocol.fm.commands[STATUS_COMMAND]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with server.index._lock:
            held.set()
            release.wait(10)

    threading.Thread(target=hold, daemon=True).start()
    held.wait(5)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(status, server)
        try:
            assert answer.result(timeout=2)["files"] == 0
        finally:
            release.set()


def test_edits_after_unusual_line_breaks_land_where_the_client_put_them(peer, workspace):
    """Clients split lines only at \\n, \\r\\n and \\r; U+0085 or a form feed inside a line
    must not shift an incremental edit to another line."""
    indexed(peer, workspace)
    uri = (workspace / "pkg" / "odd.py").as_uri()
    _open(peer, uri, "x = '\x85'\ny = '\x0c\u2028'\noldname = 1\n")
    peer.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 2, "character": 0}, "end": {"line": 2, "character": 7}}, "text": "newname"}]})
    eventually(lambda: search_paths(peer, "newname") == {"pkg/odd.py"})
    assert search_paths(peer, "oldname") == set()
