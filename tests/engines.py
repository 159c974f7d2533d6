"""Inference engines for tests: llama-cpp-python's own OpenAI-compatible server serving the
embedded model (a real engine), and a tiny HTTP server that answers as a broken engine would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from aligncoder_lsp.config import Settings
from aligncoder_lsp.models.embedded import embedded_generator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RealEngine:
    """``python -m llama_cpp.server`` on 127.0.0.1 with one thread; stop and start it again
    on the same port to play an engine that goes down and comes back."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        model = embedded_generator(Settings().resolved_cache_dir())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                 "--port", str(self.port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the engine exited: {self.log()[-2000:]}"
            assert time.monotonic() < deadline, "the engine did not start"
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class FakeEngine:
    """An HTTP server in a thread whose every ``POST`` is answered by ``reply(handler, count)``
    (``count``: the requests so far; ``handler.rfile_body``: the request's body);
    ``GET /v1/models`` lists one model."""

    def __init__(self, reply: Callable[[BaseHTTPRequestHandler, int], None]):
        self.requests = 0
        self.bodies: list[bytes] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                send(self, 200, "application/json", b'{"object": "list", "data": [{"id": "fake"}]}')

            def do_POST(self):
                self.rfile_body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                engine.bodies.append(self.rfile_body)
                engine.requests += 1
                reply(self, engine.requests)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def events(*texts: str) -> bytes:
    """A streamed completion of ``texts`` as one choice, as server-sent events."""
    chunks = [b'data: {"choices": [{"index": 0, "text": %s, "finish_reason": null}]}\n\n'
              % json.dumps(text).encode() for text in texts]
    return b"".join(chunks) + b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}\n\n' \
        b"data: [DONE]\n\n"

