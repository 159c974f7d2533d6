"""A minimal LSP client over a server subprocess's stdio: exact protocol tests and
benchmarks of the real server process."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

SERVER = [sys.executable, "-m", "aligncoder_lsp", "serve"]


class RpcPeer:
    """The client side of one server process. ``launcher`` is a command that starts the
    server as its own child (the server then inherits this peer's pipes); ``closed`` is set
    when the server's output ends, ``log_closed`` when no process holds its stderr any more."""

    def __init__(self, *args: str, stderr: Any = subprocess.PIPE, launcher: Sequence[str] = ()):
        self.process = subprocess.Popen([*launcher, *SERVER, *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=stderr)
        self.messages: queue.Queue[dict] = queue.Queue()
        self.notifications: list[dict] = []
        self.closed = threading.Event()
        self.log_closed = threading.Event()
        self.stderr_lines: list[bytes] = []
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        if self.process.stderr is not None:
            threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        self.stderr_lines.extend(self.process.stderr)
        self.log_closed.set()

    def _read(self) -> None:
        stream = self.process.stdout
        try:
            while True:
                length = None
                while (line := stream.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line or length is None:
                    return
                self.messages.put(json.loads(stream.read(length)))
        finally:
            self.closed.set()

    def _next(self, timeout: float) -> dict:
        """The next message; notifications are recorded and server requests accepted."""
        message = self.messages.get(timeout=timeout)
        if "method" in message:
            self.notifications.append(message)
            if "id" in message:
                self.send({"id": message["id"], "result": None})
        return message

    def write(self, data: bytes) -> None:
        """Send bytes exactly as given (malformed frames included)."""
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_raw(self, body: bytes) -> None:
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: dict) -> None:
        self.send_raw(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: Any = None, timeout: float = 60) -> dict:
        """Send a request and return its response (result or error message)."""
        msg_id = next(self._ids)
        self.send({"id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def response(self, msg_id: Any, timeout: float = 60) -> dict:
        while True:
            message = self._next(timeout)
            if "method" not in message and message.get("id") == msg_id:
                return message

    def wait_for(self, method: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 600) -> dict:
        """Wait for a notification ``method`` whose params satisfy ``predicate``."""
        for message in self.notifications:
            if message["method"] == method and predicate(message.get("params")):
                return message
        while True:
            message = self._next(timeout)
            if message.get("method") == method and predicate(message.get("params")):
                return message

    def initialize(self, root: str | None = None, capabilities: dict | None = None, options: dict | None = None,
                   process_id: int | None = None) -> dict:
        response = self.request("initialize", {
            "processId": process_id,
            "rootUri": root,
            "capabilities": capabilities or {},
            "initializationOptions": options,
        })
        self.notify("initialized", {})
        return response

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
