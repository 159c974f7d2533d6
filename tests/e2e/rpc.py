"""A minimal JSON-RPC peer over a subprocess's stdio, for exact protocol tests."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
from typing import Any

SERVER = [sys.executable, "-m", "aligncoder_lsp", "serve"]


class RpcPeer:
    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [*SERVER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.messages: queue.Queue[dict] = queue.Queue()
        self.notifications: list[dict] = []
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line or length is None:
                return
            self.messages.put(json.loads(stream.read(length)))

    def send_raw(self, body: bytes) -> None:
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

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
            message = self.messages.get(timeout=timeout)
            if "method" in message:
                self.notifications.append(message)
                if "id" in message:  # a request from the server: accept it
                    self.send({"id": message["id"], "result": None})
            elif message.get("id") == msg_id:
                return message

    def initialize(self, root: str | None = None, capabilities: dict | None = None, options: dict | None = None) -> dict:
        response = self.request("initialize", {
            "processId": None,
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
