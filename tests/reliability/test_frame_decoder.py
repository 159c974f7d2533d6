"""The frame decoder alone: every malformed input becomes one BadFrame and the frames after
it come through intact, however the bytes are split into reads."""

import json

import pytest

from aligncoder_lsp.server.transport import MAX_HEADER_BYTES, BadFrame, Frame, FrameDecoder

GOOD = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}).encode()


def _frame(body: bytes = GOOD, headers: bytes = b"") -> bytes:
    return b"Content-Length: %d\r\n%s\r\n" % (len(body), headers) + body


def _decode(data: bytes, max_body: int = 1024, step: int | None = None) -> list:
    decoder = FrameDecoder(max_body)
    step = step or len(data) or 1
    events = []
    for start in range(0, len(data), step):
        events += decoder.feed(data[start:start + step])
    return [e.body if isinstance(e, Frame) else "bad" for e in events]


@pytest.mark.parametrize("step", [None, 1, 7])
def test_frames_split_anywhere_come_through(step):
    data = _frame() + b"\r\n" + _frame(b"{}", b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n")
    assert _decode(data, step=step) == [GOOD, b"{}"]


@pytest.mark.parametrize("header", [
    b"Content-Length: 2048", b"Content-Length: " + b"9" * 5000, b"Content-Length: -1", b"Content-Length: 1e3",
    b"Content-Length: \xd9\xa3", b"Content-Type: text/plain", b"POST / HTTP/1.1", b"Content-Length: 5\r\nContent-Length: 6",
])
@pytest.mark.parametrize("step", [None, 1])
def test_bad_header_is_one_bad_frame_and_the_next_frame_survives(header, step):
    assert _decode(header + b"\r\n\r\n" + GOOD + _frame(), step=step) == ["bad", GOOD]


@pytest.mark.parametrize("step", [None, 1, 5])
def test_short_body_is_cut_where_the_next_frame_begins(step):
    assert _decode(b"Content-Length: 500\r\n\r\n{\"id\": 1" + _frame(), step=step) == ["bad", GOOD]


@pytest.mark.parametrize("missing", [2, 40])
def test_body_announced_too_long_does_not_swallow_the_next_frame(missing):
    data = b"Content-Length: %d\r\n\r\n" % (len(GOOD) + missing) + GOOD + _frame() + _frame(b"{}")
    assert _decode(data) == ["bad", GOOD, b"{}"]
    assert _decode(data, step=1) == ["bad", GOOD, b"{}"]


@pytest.mark.parametrize("step", [None, 1])
def test_body_announced_too_short_is_one_bad_frame(step):
    body = '{"jsonrpc": "2.0", "method": "x", "params": "é"}'.encode()
    assert _decode(b"Content-Length: %d\r\n\r\n" % (len(body) - 1) + body + _frame(), step=step) == ["bad", GOOD]


def test_tail_glued_to_the_next_header_does_not_lose_it():
    assert _decode(b"abc" + _frame()) == ["bad", GOOD]


def test_endless_header_is_bounded():
    decoder = FrameDecoder()
    events = decoder.feed(b"X" * (MAX_HEADER_BYTES * 4))
    assert [type(e) for e in events] == [BadFrame]
    assert len(decoder._buffer) < MAX_HEADER_BYTES
    assert decoder.feed(_frame()) == [Frame(GOOD, {"content-length": str(len(GOOD))})]


def test_garbage_without_a_frame_keeps_memory_bounded():
    decoder = FrameDecoder()
    decoder.feed(b"POST / HTTP/1.1\r\n")
    for _ in range(100):
        decoder.feed(b"junk " * 2000)
    assert len(decoder._buffer) < 1024


def test_plain_frames_have_only_lsp_headers():
    frame, = FrameDecoder().feed(_frame(headers=b"content-type: x\r\n"))
    assert frame.plain
    frame, = FrameDecoder().feed(_frame(headers=b"Origin: http://example.com\r\n"))
    assert not frame.plain and frame.body == GOOD
