"""The real server completing through llama.cpp's own ``llama-server`` (built by
``./setup.sh --test`` from the same llama.cpp source as the in-process model), serving the
embedded model: recognised by its ``/props``, the prompt's KV cache kept from one keystroke to
the next, ``/infill`` with the retrieved snippets, and cancellation."""

import subprocess
import sys
import time

import httpx
import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from tests.conftest import FIXTURES
from tests.engines import LLAMA_SERVER, RealEngine

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not LLAMA_SERVER.exists(), reason="./setup.sh --test builds llama-server")]

WORKSPACE = FIXTURES / "workspace"
MAIN = WORKSPACE / "app" / "main.py"
SHORT = "def add(a, b):\n    "
LONG = "PRIMES = [\n    2,\n    3,\n    5,\n    7,\n    "
"""A prompt the embedded model continues for hundreds of tokens (one prime per line)."""
ANCHOR = "    cart = Cart()\n"
BEFORE = MAIN.read_text().split(ANCHOR)[0] + ANCHOR + "    "
DOCUMENT = BEFORE + "\n" + MAIN.read_text().split(ANCHOR)[1]
"""A new line begun inside demo(), with the function's code after it."""


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    engine = RealEngine(tmp_path_factory.mktemp("llama-server") / "engine.log", llama_cpp=True)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def fim(tmp_path_factory):
    engine = RealEngine(tmp_path_factory.mktemp("llama-server-fim") / "engine.log", llama_cpp=True, fim=True)
    engine.start()
    yield engine
    engine.stop()


def _server(tmp_path, engine: RealEngine, options: dict) -> RpcPeer:
    """A server completing through ``engine``; with retrieval, once the workspace is indexed."""
    peer = RpcPeer("--engine", engine.url, "--cache-dir", str(tmp_path / "cache"), "-v")
    peer.initialize(WORKSPACE.as_uri(), {"window": {"workDoneProgress": True}}, options)
    if options["retrieval"]["enabled"]:
        peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end", timeout=300)
    return peer


def _edit(peer: RpcPeer, text: str, version: int) -> None:
    if version == 1:
        peer.notify("textDocument/didOpen", {"textDocument": {"uri": MAIN.as_uri(), "languageId": "python",
                                                               "version": 1, "text": text}})
    else:
        peer.notify("textDocument/didChange", {"textDocument": {"uri": MAIN.as_uri(), "version": version},
                                               "contentChanges": [{"text": text}]})


def _complete(peer: RpcPeer, before: str) -> tuple[str, dict]:
    """The completion at the end of ``before`` (the document may go on after it)."""
    lines = before.split("\n")
    response = peer.request("textDocument/completion", {"textDocument": {"uri": MAIN.as_uri()},
                                                        "position": {"line": len(lines) - 1,
                                                                     "character": len(lines[-1])}}, timeout=120)
    items = response["result"]["items"]
    assert items, response
    return items[0]["textEdit"]["newText"], items[0]["data"]


def _processing(engine: RealEngine) -> bool:
    return httpx.get(f"{engine.url}/slots", timeout=5).json()[0]["is_processing"]


def test_the_engine_is_recognised_and_keeps_the_prompt_cache_between_keystrokes(plain, tmp_path):
    peer = _server(tmp_path, plain, {"retrieval": {"enabled": False}, "model": {"maxTokens": 16}})
    _edit(peer, SHORT, 1)
    text, trace = _complete(peer, SHORT)
    assert text.strip() and trace["backend"] == f"llama.cpp server {plain.url}"
    assert trace["prompt_format"] == "left-to-right" and trace["prompt_tokens"] > 0
    typed = SHORT + "total = a"  # not the suggestion's start, which would be answered from the suggestion
    _edit(peer, typed, 2)
    _, trace = _complete(peer, typed)
    assert 0 < trace["reused_tokens"] < trace["prompt_tokens"]  # the engine's own counts
    peer.close()


def test_a_model_without_fim_tokens_completes_left_to_right_inside_code(plain, tmp_path):
    peer = _server(tmp_path, plain, {"retrieval": {"enabled": False}, "model": {"maxTokens": 16}})
    _edit(peer, DOCUMENT, 1)
    _, trace = _complete(peer, BEFORE)
    assert trace["prompt_format"] == "left-to-right" and trace["generated_tokens"] > 0
    peer.close()


def test_infill_takes_the_retrieved_snippets_as_extra_input(fim, tmp_path):
    traces = {}
    for retrieval in (False, True):
        peer = _server(tmp_path / str(retrieval), fim, {"retrieval": {"enabled": retrieval, "mode": "bm25"},
                                                        "model": {"maxTokens": 8}})
        _edit(peer, DOCUMENT, 1)
        _, traces[retrieval] = _complete(peer, BEFORE)
        peer.close()
    bare, retrieved = traces[False], traces[True]
    for trace in (bare, retrieved):
        assert trace["prompt_format"] == "fill-in-the-middle (llama.cpp /infill)"
        assert trace["backend"] == f"llama.cpp server {fim.url}" and trace["generated_tokens"] > 0
    assert retrieved["snippets"] and not bare["snippets"]
    # the engine counted the snippets it laid out (with its file separators) into the prompt
    assert retrieved["prompt_tokens"] > bare["prompt_tokens"] + 20


def test_a_cancelled_completion_stops_the_engine_generating(plain, tmp_path):
    peer = _server(tmp_path, plain, {"retrieval": {"enabled": False}, "model": {"maxTokens": 1024},
                                     "completion": {"maxLines": 200}})
    _edit(peer, LONG, 1)
    lines = LONG.split("\n")
    peer.send({"id": "long", "method": "textDocument/completion",
               "params": {"textDocument": {"uri": MAIN.as_uri()},
                          "position": {"line": len(lines) - 1, "character": len(lines[-1])}}})
    deadline = time.monotonic() + 60
    while not _processing(plain):
        assert time.monotonic() < deadline, "the engine never got the request"
        time.sleep(0.02)
    time.sleep(0.5)
    peer.notify("$/cancelRequest", {"id": "long"})
    cancelled = time.monotonic()
    assert peer.response("long", timeout=30)["error"]["code"] == -32800
    while _processing(plain):
        assert time.monotonic() - cancelled < 5, "the engine went on generating after the cancellation"
        time.sleep(0.01)
    _edit(peer, SHORT, 2)
    text, trace = _complete(peer, SHORT)  # the engine is free again at once, not after 1024 tokens
    assert text.strip() and time.monotonic() - cancelled < 20
    peer.close()


def test_doctor_names_the_llama_cpp_server_and_its_infill(fim):
    doctor = subprocess.run([sys.executable, "-m", "aligncoder_lsp", "doctor", "--engine", fim.url],
                            capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "kind       llama.cpp server (prompt cache kept); fill-in-the-middle: llama.cpp /infill" in doctor.stdout
