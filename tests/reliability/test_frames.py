"""Malformed frames and messages on stdio: each gets a JSON-RPC error reply, nothing runs that
should not, and the server keeps answering the frames that follow."""

import json

import pytest

from tests.reliability.conftest import WORKSPACE, index_status

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
STATUS = {"jsonrpc": "2.0", "id": 99, "method": "workspace/executeCommand",
          "params": {"command": "aligncoder.indexStatus"}}


def _frame(message: dict, headers: bytes = b"") -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n%s\r\n" % (len(body), headers) + body


@pytest.fixture
def ready(peer):
    peer.initialize(WORKSPACE.as_uri())
    return peer


def _error_then_alive(peer, code: int, msg_id=None) -> dict:
    reply = peer.response(msg_id, timeout=20)
    assert reply["error"]["code"] == code, reply
    index_status(peer)
    return reply


@pytest.mark.parametrize("header", [
    b"Content-Length: 99999999999999",
    b"Content-Length: " + b"9" * 5000,
    b"Content-Length: -5",
    b"Content-Length: abc",
    b"Content-Length: 12 34",
    b"Content-Type: application/vscode-jsonrpc; charset=utf-8",  # no Content-Length
    b"Content-Length: 0",
], ids=["huge", "thousands-of-digits", "negative", "non-numeric", "two-numbers", "missing", "zero"])
def test_bad_content_length_is_answered_and_the_next_frame_is_read(ready, header):
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "shutdown"}).encode()
    ready.write(header + b"\r\n\r\n" + body + _frame(STATUS))
    reply = ready.response(None, timeout=20)
    assert reply["error"]["code"] == PARSE_ERROR and "Traceback" not in json.dumps(reply)
    assert "result" in ready.response(99, timeout=20)
    index_status(ready)  # the body of the bad frame (a shutdown) did not run


def test_body_shorter_than_announced_is_answered_and_the_next_frame_survives(ready):
    short = b'{"jsonrpc": "2.0", "id": 5, "method": "shutdown"}'
    ready.write(b"Content-Length: %d\r\n\r\n" % (len(short) + 40) + short + _frame(STATUS))
    reply = ready.response(None, timeout=20)
    assert reply["error"]["code"] == PARSE_ERROR
    assert "result" in ready.response(99, timeout=20)
    index_status(ready)


def test_body_longer_than_announced_is_answered_and_the_next_frame_survives(ready):
    """A client that counts characters instead of bytes announces too few bytes."""
    body = json.dumps({"jsonrpc": "2.0", "method": "initialized", "params": {"note": "é" * 10}},
                      ensure_ascii=False).encode()
    ready.write(b"Content-Length: %d\r\n\r\n" % (len(body) - 10) + body + _frame(STATUS))
    assert ready.response(None, timeout=20)["error"]["code"] == PARSE_ERROR
    assert "result" in ready.response(99, timeout=20)


def test_garbage_between_frames_is_skipped(ready):
    ready.write(b"hello there\r\n{not a frame}" + _frame(STATUS))
    assert ready.response(None, timeout=20)["error"]["code"] == PARSE_ERROR
    assert "result" in ready.response(99, timeout=20)


def test_endless_header_line_is_answered(ready):
    ready.write(b"X-Junk: " + b"a" * 100_000 + b"\r\n\r\n" + _frame(STATUS))
    assert ready.response(None, timeout=20)["error"]["code"] == PARSE_ERROR
    assert "result" in ready.response(99, timeout=20)


def test_unknown_header_is_ignored(ready):
    ready.write(_frame(STATUS, headers=b"X-Editor: vim\r\n"))
    assert "result" in ready.response(99, timeout=20)


def test_bad_json_is_a_parse_error(ready):
    ready.send_raw(b'{"jsonrpc": "2.0", "id": 3, "method": ')
    _error_then_alive(ready, PARSE_ERROR)


def test_invalid_utf8_is_a_parse_error(ready):
    ready.send_raw(b'{"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": "\xff\xfe"}')
    reply = _error_then_alive(ready, PARSE_ERROR)
    assert "UTF-8" in reply["error"]["message"]


def test_jsonrpc_1_request_is_an_invalid_request_and_does_not_run(ready):
    ready.send_raw(json.dumps({"id": 7, "method": "shutdown", "params": None}).encode())
    _error_then_alive(ready, INVALID_REQUEST, msg_id=7)


def test_jsonrpc_1_notification_is_answered(ready):
    ready.send_raw(json.dumps({"id": None, "method": "exit", "params": []}).encode())
    _error_then_alive(ready, INVALID_REQUEST)


def test_batch_is_an_invalid_request_and_does_not_run(ready):
    ready.send_raw(json.dumps([{"jsonrpc": "2.0", "id": 8, "method": "shutdown"}]).encode())
    _error_then_alive(ready, INVALID_REQUEST)


@pytest.mark.parametrize("message, reply_id", [
    (42, None), ("text", None), (None, None),
    ({"jsonrpc": "2.0", "id": {"no": 1}, "method": "shutdown"}, None),
    ({"jsonrpc": "2.0", "id": True, "method": "shutdown"}, None),
    ({"jsonrpc": "2.0", "id": 4, "method": 12}, 4),
    ({"jsonrpc": "2.0"}, None),
], ids=["number", "string", "null", "object-id", "bool-id", "numeric-method", "empty"])
def test_message_that_is_not_a_request_is_an_invalid_request(ready, message, reply_id):
    ready.send_raw(json.dumps(message).encode())
    _error_then_alive(ready, INVALID_REQUEST, msg_id=reply_id)


def test_deeply_nested_json_is_a_parse_error(ready):
    ready.send_raw(b"[" * 100_000 + b"]" * 100_000)
    _error_then_alive(ready, PARSE_ERROR)


def test_error_replies_carry_a_short_message_and_no_traceback(ready):
    reply = ready.request("workspace/executeCommand", {"command": "aligncoder.search"})
    assert reply["error"]["code"] == INVALID_PARAMS
    assert "data" not in reply["error"] or "traceback" not in json.dumps(reply["error"]["data"])
    assert len(reply["error"]["message"]) < 300


def test_newline_only_line_endings_are_accepted(ready):
    body = json.dumps(STATUS).encode()
    ready.write(b"Content-Length: %d\n\n" % len(body) + body)
    assert "result" in ready.response(99, timeout=20)
