"""Requests of a typing user, with the real model: stale requests give way to the newest
one, a completion and an inline completion at the same place share one computation, and
typing along with a suggestion is answered from it."""

import json
import time

import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from tests.conftest import FIXTURES

WORKSPACE = FIXTURES / "workspace"
MAIN = WORKSPACE / "app" / "main.py"
LINE, COLUMN = 13, 4  # the blank line at the end of demo()

pytestmark = pytest.mark.slow


@pytest.fixture
def session(tmp_path):
    log = tmp_path / "server.log"
    peer = RpcPeer("-vv", "--log-file", str(log), "--cache-dir", str(tmp_path / "cache"))
    peer.initialize(WORKSPACE.as_uri(), {}, {"model": {"maxTokens": 24}, "retrieval": {"mode": "bm25"}})
    peer.notify("textDocument/didOpen", {"textDocument": {
        "uri": MAIN.as_uri(), "languageId": "python", "version": 1, "text": MAIN.read_text()}})
    yield peer, log
    peer.close()


def _params(line: int = LINE, character: int = COLUMN) -> dict:
    return {"textDocument": {"uri": MAIN.as_uri()}, "position": {"line": line, "character": character}}


def _frame(message: dict) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _computations(log) -> int:
    return log.read_text().count("completing ")


def test_completion_and_inline_completion_at_one_place_share_one_computation(session):
    peer, log = session
    peer.send({"id": "popup", "method": "textDocument/completion", "params": _params()})
    peer.send({"id": "ghost", "method": "textDocument/inlineCompletion",
               "params": {**_params(), "context": {"triggerKind": 1}}})
    popup, ghost = peer.response("popup", 120), peer.response("ghost", 120)
    text = popup["result"]["items"][0]["textEdit"]["newText"]
    assert text and text == ghost["result"]["items"][0]["insertText"].split("\n")[0]  # the popup inserts one line
    assert _computations(log) == 1


def test_a_client_that_never_cancels_gets_only_the_newest_request_computed(session):
    peer, log = session
    warm = peer.request("textDocument/completion", _params(), timeout=120)  # the model is loaded
    keystrokes = "vq = "  # not what was suggested: no answer can come from the shown suggestion
    assert not warm["result"]["items"][0]["textEdit"]["newText"].startswith(keystrokes[0])
    started = _computations(log)
    line = MAIN.read_text().split("\n")[LINE]
    burst = []  # typed faster than the server reads: the keystrokes arrive together
    for version, typed in enumerate(keystrokes, start=2):  # one keystroke each, no $/cancelRequest
        burst.append(_frame({"method": "textDocument/didChange", "params": {
            "textDocument": {"uri": MAIN.as_uri(), "version": version},
            "contentChanges": [{"range": {"start": {"line": LINE, "character": len(line)},
                                          "end": {"line": LINE, "character": len(line)}}, "text": typed}]}}))
        line += typed
        burst.append(_frame({"id": f"key{version}", "method": "textDocument/completion",
                             "params": _params(LINE, len(line))}))
    peer.write(b"".join(burst))
    answers = [peer.response(f"key{version}", 120) for version in range(2, 7)]
    assert all("result" in answer for answer in answers)
    assert answers[-1]["result"]["items"], "the newest request must be answered with a suggestion"
    assert all(not answer["result"]["items"] for answer in answers[:-1])
    assert _computations(log) - started == 1  # the newest only


def test_typing_along_with_a_suggestion_is_answered_without_the_model(session):
    peer, log = session
    first = peer.request("textDocument/inlineCompletion", {**_params(), "context": {"triggerKind": 1}}, 120)
    suggestion = first["result"]["items"][0]["insertText"]
    assert len(suggestion.strip()) >= 3
    typed = suggestion[:2]
    peer.notify("textDocument/didChange", {
        "textDocument": {"uri": MAIN.as_uri(), "version": 2},
        "contentChanges": [{"range": {"start": {"line": LINE, "character": COLUMN},
                                      "end": {"line": LINE, "character": COLUMN}}, "text": typed}]})
    computed = _computations(log)
    started = time.monotonic()
    second = peer.request("textDocument/inlineCompletion",
                          {**_params(LINE, COLUMN + len(typed)), "context": {"triggerKind": 2}}, 120)
    assert second["result"]["items"][0]["insertText"] == suggestion[2:]
    assert _computations(log) == computed
    trace = peer.request("workspace/executeCommand", {"command": "aligncoder.lastTrace", "arguments": []})["result"]
    assert trace["typed_ahead"] == 2
    assert time.monotonic() - started < 5


def test_a_cancel_storm_leaves_the_model_thread_free(session):
    peer, log = session
    for number in range(30):
        peer.send({"id": f"storm{number}", "method": "textDocument/completion", "params": _params()})
        peer.notify("$/cancelRequest", {"id": f"storm{number}"})
    answers = [peer.response(f"storm{number}", 120) for number in range(30)]
    assert all("result" in answer or answer["error"]["code"] == -32800 for answer in answers)
    assert _computations(log) <= 3  # cancelled requests never reach the model, or stop at its next step
    last = peer.request("textDocument/completion", _params(), timeout=120)
    assert last["result"]["items"]
