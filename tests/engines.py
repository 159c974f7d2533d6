"""Inference engines for tests: llama-cpp-python's own OpenAI-compatible server and llama.cpp's
``llama-server``, each serving the embedded model (real engines), and a tiny HTTP server that
answers as a broken engine would."""

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


LLAMA_SERVER = Path(sys.executable).parent / "llama-server"
"""llama.cpp's own server, built by ``./setup.sh --test`` from llama-cpp-python's source."""
FIM_OVERRIDE = "tokenizer.ggml.fim_pre_token_id=int:6,tokenizer.ggml.fim_suf_token_id=int:7," \
               "tokenizer.ggml.fim_mid_token_id=int:8"
"""Gemma-3's ``<unused0..2>`` tokens declared its FIM tokens: the embedded model then takes
``/infill`` requests (its answers to them are not meant to be good)."""


class RealEngine:
    """A real engine on 127.0.0.1 with one thread serving the embedded model: by default
    ``python -m llama_cpp.server``; ``llama_cpp=True``: llama.cpp's ``llama-server`` (with
    ``fim=True``, taking ``/infill`` requests). Stop and start it again on the same port to play
    an engine that goes down and comes back."""

    def __init__(self, log: Path, llama_cpp: bool = False, fim: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.process: subprocess.Popen | None = None
        self.llama_cpp, self.fim = llama_cpp, fim

    def command(self) -> list[str]:
        model, port = str(embedded_generator(Settings().resolved_cache_dir())), str(self.port)
        if not self.llama_cpp:
            return [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                    "--port", port, "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048"]
        fim = ["--override-kv", FIM_OVERRIDE] if self.fim else []
        # --swa-full: Gemma-3's sliding-window layers keep the whole prompt, so it can be reused
        return [str(LLAMA_SERVER), "--model", model, "--host", "127.0.0.1", "--port", port, "--threads", "1",
                "--ctx-size", "4096", "--parallel", "1", "--swa-full", *fim]

    def start(self, timeout: float = 120) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
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
    (``count``: the requests so far; ``handler.rfile_body``: the request's body; ``engine.paths``:
    the paths asked); a ``GET`` of a path in ``gets`` is answered its (status, JSON body), one of
    ``/v1/models`` otherwise lists one model."""

    def __init__(self, reply: Callable[[BaseHTTPRequestHandler, int], None],
                 gets: dict[str, tuple[int, bytes]] | None = None):
        self.requests = 0
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = (gets or {}).get(self.path, (200, b'{"object": "list", "data": [{"id": "fake"}]}'))
                send(self, status, "application/json", body)

            def do_POST(self):
                self.rfile_body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                engine.paths.append(self.path)
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

