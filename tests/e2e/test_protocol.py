"""Lifecycle, errors and encodings of the real server process, checked message by message.

These tests point the server at a missing model on purpose: the protocol must keep working
and the user must get one clear message.
"""

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import FIXTURES
from aligncoder_lsp.evaluation.rpc import RpcPeer

WORKSPACE = FIXTURES / "workspace"
MAIN = WORKSPACE / "app" / "main.py"
MISSING_MODEL = "/nonexistent/model.gguf"
INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR = -32602, -32600, -32700


@pytest.fixture
def peer():
    peer = RpcPeer("--model", MISSING_MODEL)
    yield peer
    peer.close()


def _open_main(peer: RpcPeer) -> None:
    peer.notify("textDocument/didOpen", {"textDocument": {
        "uri": MAIN.as_uri(), "languageId": "python", "version": 1, "text": MAIN.read_text()}})


def _completion(line: int = 13, character: int = 4) -> dict:
    return {"textDocument": {"uri": MAIN.as_uri()}, "position": {"line": line, "character": character}}


def test_capabilities_are_advertised(peer):
    capabilities = peer.initialize(WORKSPACE.as_uri())["result"]["capabilities"]
    assert capabilities["completionProvider"] is not None
    assert capabilities["inlineCompletionProvider"] is not None
    assert capabilities["textDocumentSync"]["change"] == 2  # incremental
    assert capabilities["positionEncoding"] == "utf-16"


def test_utf8_is_chosen_when_offered(peer):
    offered = {"general": {"positionEncodings": ["utf-16", "utf-8"]}}
    assert peer.initialize(WORKSPACE.as_uri(), offered)["result"]["capabilities"]["positionEncoding"] == "utf-8"


def test_missing_model_is_one_clear_message_and_the_protocol_goes_on(peer):
    peer.initialize(WORKSPACE.as_uri())
    _open_main(peer)
    for _ in range(2):
        response = peer.request("textDocument/completion", _completion())
        assert response["result"] == {"isIncomplete": False, "items": []}
    shown = [n for n in peer.notifications if n["method"] == "window/showMessage"]
    assert len(shown) == 1
    assert MISSING_MODEL in shown[0]["params"]["message"]
    assert shown[0]["params"]["type"] == 1


def test_invalid_params_are_answered(peer):
    peer.initialize(WORKSPACE.as_uri())
    response = peer.request("textDocument/completion", {"textDocument": {"uri": MAIN.as_uri()}})
    assert response["error"]["code"] == INVALID_PARAMS
    response = peer.request("textDocument/completion", _completion(line=-1))
    assert response["error"]["code"] == INVALID_PARAMS
    response = peer.request("textDocument/completion", {
        "textDocument": {"uri": (WORKSPACE / "nope.py").as_uri()}, "position": {"line": 0, "character": 0}})
    assert response["error"]["code"] == INVALID_PARAMS
    assert not [n for n in peer.notifications if n["method"] == "window/showMessage" and "nope" in json.dumps(n)]


def test_malformed_json_gets_parse_error_and_server_survives(peer):
    peer.initialize(WORKSPACE.as_uri())
    peer.send_raw(b"{not json")
    assert peer.response(None)["error"]["code"] == PARSE_ERROR
    assert peer.request("shutdown")["result"] is None


def test_requests_after_shutdown_are_rejected_and_exit_is_clean(peer):
    peer.initialize(WORKSPACE.as_uri())
    assert peer.request("shutdown")["result"] is None
    response = peer.request("textDocument/completion", _completion())
    assert response["error"]["code"] == INVALID_REQUEST
    peer.notify("exit")
    code = peer.wait()
    peer.log_closed.wait(10)
    assert code == 0, b"".join(peer.stderr_lines).decode(errors="replace")


def test_exit_without_shutdown_exits_1(peer):
    peer.initialize(WORKSPACE.as_uri())
    peer.notify("exit")
    assert peer.wait() == 1


def test_server_exits_when_stdin_closes(peer):
    peer.initialize(WORKSPACE.as_uri())
    peer.process.stdin.close()
    assert peer.wait() == 1


def test_positions_beyond_the_document_are_clamped(peer):
    peer.initialize(WORKSPACE.as_uri())
    _open_main(peer)
    response = peer.request("textDocument/completion", _completion(line=999, character=999))
    assert "result" in response


def test_tcp_server_lifecycle():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aligncoder_lsp", "serve", "--tcp", "--port", str(port),
                               "--model", MISSING_MODEL], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                assert server.poll() is None and time.monotonic() < deadline, "the TCP server did not start"
                time.sleep(0.1)
        reader = connection.makefile("rb")

        def call(message: dict) -> dict | None:
            body = json.dumps({"jsonrpc": "2.0", **message}).encode()
            connection.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            if "id" not in message:
                return None
            while True:
                length = int(reader.readline().split(b":")[1])
                while reader.readline() != b"\r\n":
                    pass
                reply = json.loads(reader.read(length))
                if reply.get("id") == message["id"]:
                    return reply

        assert "capabilities" in call({"id": 1, "method": "initialize", "params": {"capabilities": {}}})["result"]
        assert call({"id": 2, "method": "shutdown"})["result"] is None
        call({"method": "exit"})
        assert server.wait(30) == 0
        assert b"Traceback" not in server.stderr.read()
    finally:
        server.kill()
