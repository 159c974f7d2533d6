"""The LSP base protocol on stdio and TCP, hardened against bad input and dead clients.

pygls reads frames with an unbounded ``read(Content-Length)`` and silently skips header
lines it does not understand, so one bad frame kills or deafens the server. Here:

* frames are decoded by :class:`FrameDecoder`, which bounds the header block and the body
  (:data:`MAX_FRAME_BYTES`), reports every bad frame (the protocol answers it with a parse
  error) and resynchronises on the next ``Content-Length`` header;
* a session ends on ``exit``, at the end of the input or when the client process dies; the
  process then has :data:`EXIT_GRACE_SECONDS` to stop cleanly before it is ended regardless
  (a running index build or generation cannot hold it);
* TCP serves one client: while one is connected other connections are closed at once, a
  connection whose first frame is not a plain LSP frame is closed without effect, and only
  the end of the accepted client's connection ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, NoReturn

if TYPE_CHECKING:
    from aligncoder_lsp.server.protocol import AlignProtocol
    from pygls.lsp.server import LanguageServer

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 2**20
"""The largest body accepted; an LSP message beyond this is a bug or an attack."""
MAX_HEADER_BYTES = 8 * 1024
EXIT_GRACE_SECONDS = 1.5
"""How long a clean stop may take once the session is over, before the process is ended."""
FIRST_FRAME_SECONDS = 30.0
"""How long a new TCP connection may take to send its first frame."""
CHUNK_BYTES = 64 * 1024
LSP_HEADERS = frozenset({"content-length", "content-type"})

_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_FRAME_START = re.compile(rb"content-length:[ \t]*\d+[ \t]*\r?\n", re.IGNORECASE)
"""A Content-Length header line. Valid JSON never contains one (a raw newline cannot sit
inside a JSON string), so finding one inside a body means the body ended early."""
_FRAME_START_TAIL = 64  # bytes kept while scanning, in case a header is split across reads


@dataclass
class Frame:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """Only the headers the LSP base protocol defines."""
        return set(self.headers) <= LSP_HEADERS


@dataclass
class BadFrame:
    reason: str


class FrameDecoder:
    """Turns a byte stream into frames (sans I/O: ``feed`` bytes, get events)."""

    def __init__(self, max_body: int = MAX_FRAME_BYTES):
        self.max_body = max_body
        self._buffer = bytearray()
        self._resyncing = False
        self._pending: tuple[dict[str, str], int, int] | None = None  # headers, body start, length
        self._scanned = 0  # how far the pending body was searched for a new frame
        self._ignored: set[str] = set()  # unknown header names already logged

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self._buffer += data
        events = []
        while (event := self._next()) is not None:
            events.append(event)
        return events

    def _next(self) -> Frame | BadFrame | None:
        if self._resyncing and not self._resync():
            return None
        if self._pending is None:
            header = self._read_header()
            if not isinstance(header, tuple):
                return header
            self._pending = header
            self._scanned = header[1]
        headers, start, length = self._pending
        end = min(len(self._buffer), start + length)
        scan_from = max(start, self._scanned - _FRAME_START_TAIL)
        cut = _FRAME_START.search(self._buffer, scan_from, end) if self._buffer.find(b"\n", scan_from, end) >= 0 else None
        if cut is not None:
            del self._buffer[:cut.start()]
            self._pending = None
            return BadFrame(f"the body ended after {cut.start() - start} of {length} bytes: a new frame began")
        if end < start + length:
            self._scanned = end
            return None
        body = bytes(self._buffer[start:end])
        self._pending = None
        if _unclosed(body):  # the length is wrong: the next frame may begin inside this body
            del self._buffer[:start]
            self._resyncing = True
            return BadFrame(f"the body does not end after its {length} bytes")
        del self._buffer[:end]
        return Frame(body, headers)

    def _read_header(self) -> tuple[dict[str, str], int, int] | BadFrame | None:
        """Parse the header block at the front of the buffer; ``None`` until it is complete."""
        while self._buffer.startswith((b"\n", b"\r\n")):  # blank lines between frames
            del self._buffer[: 1 if self._buffer[0] == ord("\n") else 2]
        headers: dict[str, str] = {}
        position = 0
        while True:
            newline = self._buffer.find(b"\n", position, MAX_HEADER_BYTES)
            if newline < 0:
                return self._bad("the header is too long") if len(self._buffer) >= MAX_HEADER_BYTES else None
            line = bytes(self._buffer[position:newline]).removesuffix(b"\r")
            position = newline + 1
            if not line:
                break
            match = _HEADER_LINE.fullmatch(line)
            if match is None:
                return self._bad(f"not a header line: {line[:60]!r}")
            name, value = match.group(1).decode().lower(), match.group(2).decode("latin-1")
            if name in headers and headers[name] != value:
                return self._bad(f"conflicting {name} headers", skip=position)
            headers[name] = value
        if unknown := set(headers) - LSP_HEADERS - self._ignored:
            logger.warning("ignoring unknown headers: %s", ", ".join(sorted(unknown)))
            self._ignored |= unknown
        length = headers.get("content-length")
        if length is None:
            return self._bad("no Content-Length header")
        if not length.isascii() or not length.isdigit():
            return self._bad(f"Content-Length is not a byte count: {length[:40]!r}")
        if len(length) > 18 or int(length) > self.max_body:
            return self._bad(f"a body of {length[:40]} bytes exceeds the limit of {self.max_body}")
        return headers, position, int(length)

    def _bad(self, reason: str, skip: int = 1) -> BadFrame:
        """Drop the start of the broken header block (its first byte: a frame may begin on
        any of its lines) and look for the next frame."""
        del self._buffer[:skip]
        self._resyncing = True
        return BadFrame(reason)

    def _resync(self) -> bool:
        match = _FRAME_START.search(self._buffer)
        if match is None:
            del self._buffer[: max(0, len(self._buffer) - _FRAME_START_TAIL)]
            return False
        del self._buffer[: match.start()]
        self._resyncing = False
        return True


def _unclosed(body: bytes) -> bool:
    """A body that opens a JSON object or array and does not close it."""
    head, tail = body[:64].lstrip()[:1], body[-64:].rstrip()[-1:]
    return (head == b"{" and tail != b"}") or (head == b"[" and tail != b"]")


class Session:
    """One client's session; ``over`` resolves to the exit code when it ends."""

    def __init__(self, protocol: AlignProtocol):
        self._loop = asyncio.get_running_loop()
        self.over: asyncio.Future[int] = self._loop.create_future()
        protocol.on_end = self.end

    def end(self, code: int) -> None:
        """Stop serving (from any thread); the process ends within EXIT_GRACE_SECONDS."""
        _exit_after(EXIT_GRACE_SECONDS, code)
        self._loop.call_soon_threadsafe(lambda: self.over.done() or self.over.set_result(code))


def end_process(code: int) -> NoReturn:
    """End the process now, its worker processes (which hold the client's pipes) with it,
    without the interpreter's teardown of every object (seconds for a large index)."""
    for child in multiprocessing.active_children():
        child.kill()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _exit_after(seconds: float, code: int) -> None:
    """End the process after ``seconds`` unless it has ended by itself: threads stuck in an
    index build, a generation or an embedding batch cannot keep it alive."""

    def end_now() -> None:
        logger.warning("the server did not stop within %.1f s; ending it (exit code %d)", seconds, code)
        end_process(code)

    timer = threading.Timer(seconds, end_now)
    timer.daemon = True
    timer.start()


async def _dispatch(read: Callable[[], Awaitable[bytes]], protocol: AlignProtocol,
                    decoder: FrameDecoder, events: list[Frame | BadFrame]) -> None:
    """Hand ``events`` and then every frame read to the protocol until the input ends."""
    while True:
        for event in events:
            if isinstance(event, Frame):
                protocol.receive(event.body)
            else:
                protocol.reject_frame(event.reason)
        if not (data := await read()):
            return
        events = decoder.feed(data)


class PipeWriter:
    """Writes frames to a pipe; a client that stopped reading ends the session."""

    def __init__(self, stream: BinaryIO, lost: Callable[[], None]):
        self._stream = stream
        self._lost = lost

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError) as error:  # a broken pipe, or a stream already closed
            logger.info("cannot write to the client: %s", error)
            self._lost()

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass


def _stdin_reader(fd: int) -> Callable[[], Awaitable[bytes]]:
    """Chunks of ``fd`` read on a daemon thread (a blocked read never holds the process),
    at most a few chunks ahead of the protocol."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(4)

    def pump() -> None:
        data = b"-"
        while data:
            room.acquire()
            try:
                data = os.read(fd, CHUNK_BYTES)
            except OSError as error:
                logger.info("cannot read from the client: %s", error)
                data = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, data)
            except RuntimeError:  # the loop is closed
                return

    async def read() -> bytes:
        data = await chunks.get()
        room.release()
        return data

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return read


def _input_ended(reading: asyncio.Future, protocol: AlignProtocol) -> None:
    if not reading.cancelled() and reading.exception() is not None:
        logger.error("reading the client's messages failed", exc_info=reading.exception())
    protocol.end_session("the input ended")


def serve_stdio(server: LanguageServer, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Serve one client over a pair of pipes; returns the exit code."""

    async def main() -> int:
        protocol: AlignProtocol = server.protocol  # type: ignore[assignment]
        session = Session(protocol)
        protocol.set_writer(PipeWriter(stdout, lambda: protocol.end_session("the client stopped reading")))
        reading = asyncio.ensure_future(_dispatch(_stdin_reader(stdin.fileno()), protocol, FrameDecoder(), []))
        reading.add_done_callback(lambda task: _input_ended(task, protocol))
        code = await session.over
        reading.cancel()
        return code

    return asyncio.run(main())


def serve_tcp(server: LanguageServer, host: str, port: int) -> int:
    """Serve one client on ``host:port``; returns the exit code."""

    async def main() -> int:
        protocol: AlignProtocol = server.protocol  # type: ignore[assignment]
        session = Session(protocol)
        gate = _OneClient(protocol)
        listener = await asyncio.start_server(gate.connection, host, port)
        logger.info("serving on %s", ", ".join(str(s.getsockname()) for s in listener.sockets))
        code = await session.over
        listener.close()
        await gate.close()
        return code

    return asyncio.run(main())


async def _first_events(reader: asyncio.StreamReader, decoder: FrameDecoder) -> list[Frame | BadFrame]:
    """Read until the first frame (or bad frame) is complete; empty at the end of the input."""
    events: list[Frame | BadFrame] = []
    while not events and (data := await reader.read(CHUNK_BYTES)):
        events = decoder.feed(data)
    return events


class _OneClient:
    """Admits the first connection that opens with a plain LSP frame; refuses the rest."""

    def __init__(self, protocol: AlignProtocol):
        self.protocol = protocol
        self.client: asyncio.StreamWriter | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self._connections[asyncio.current_task()] = writer
        try:
            if self.client is not None:
                logger.warning("refused a connection from %s: a client is connected", peer)
                return
            decoder = FrameDecoder()
            events = await asyncio.wait_for(_first_events(reader, decoder), FIRST_FRAME_SECONDS)
            if not events or not (isinstance(events[0], Frame) and events[0].plain):
                logger.warning("closed a connection from %s: it does not open with an LSP frame", peer)
                return
            if self.client is not None:
                logger.warning("refused a connection from %s: a client is connected", peer)
                return
            self.client = writer
            logger.info("client connected from %s", peer)
            self.protocol.set_writer(writer)
            await _dispatch(lambda: reader.read(CHUNK_BYTES), self.protocol, decoder, events)
            self.protocol.end_session("the client closed the connection")
        except (asyncio.TimeoutError, ConnectionError) as error:
            logger.warning("connection from %s failed: %r", peer, error)
            if self.client is writer:
                self.protocol.end_session("the client connection failed")
        finally:
            writer.close()
            self._connections.pop(asyncio.current_task(), None)

    async def close(self) -> None:
        """Close every connection and let their handlers see the end of their input."""
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=EXIT_GRACE_SECONDS)
