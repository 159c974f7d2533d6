"""The real server over stdio completing through a real inference engine: llama-cpp-python's
OpenAI-compatible server serving the embedded model (one thread), started once for the module;
and through engines that are down, slow or answer garbage."""

import json
import re
import subprocess
import sys
import threading
import time

import pytest

from aligncoder_lsp.config import Settings
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.models.llama_backend import LlamaModel, TargetScorer
from aligncoder_lsp.models.remote import EngineScorer, RemoteEngine
from aligncoder_lsp.pipeline import local_generator_path
from tests.conftest import FIXTURES
from tests.engines import FakeEngine, RealEngine, free_port, send

pytestmark = pytest.mark.slow

WORKSPACE = FIXTURES / "workspace"
URI = (WORKSPACE / "app" / "main.py").as_uri()
SHORT = "def add(a, b):\n    "
LONG = "PRIMES = [\n    2,\n    3,\n    5,\n    7,\n    "
"""A prompt the embedded model continues for hundreds of tokens (one prime per line)."""
OPTIONS = {"retrieval": {"enabled": False}, "model": {"maxTokens": 24}}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = RealEngine(tmp_path_factory.mktemp("engine") / "engine.log")
    engine.start()
    yield engine
    engine.stop()


def _server(tmp_path, engine_url: str, *args: str, options: dict | None = None) -> RpcPeer:
    """A server completing through ``engine_url`` on the fixture workspace (retrieval off)."""
    peer = RpcPeer("--engine", engine_url, "--cache-dir", str(tmp_path / "cache"), "-v", *args)
    peer.initialize(WORKSPACE.as_uri(), {}, options or OPTIONS)
    return peer


def _open(peer: RpcPeer, text: str) -> None:
    peer.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                           "text": text}})


def _at_end(text: str) -> dict:
    lines = text.split("\n")
    return {"textDocument": {"uri": URI}, "position": {"line": len(lines) - 1, "character": len(lines[-1])}}


def _complete(peer: RpcPeer, text: str, timeout: float = 120) -> tuple[str, dict | None]:
    """(the completion's text, its trace); ("", None) for an empty answer."""
    response = peer.request("textDocument/completion", _at_end(text), timeout=timeout)
    items = response["result"]["items"]
    return (items[0]["textEdit"]["newText"], items[0]["data"]) if items else ("", None)


def _messages(peer: RpcPeer) -> list[dict]:
    return [message["params"] for message in peer.notifications if message["method"] == "window/showMessage"]


def _posts(engine: RealEngine) -> int:
    """Completion requests the engine has begun to answer (its access log)."""
    return engine.log().count("POST /v1/completions")


def _disconnects(engine: RealEngine) -> int:
    """Streams the engine saw closed by the client before it finished (it stops generating then)."""
    return engine.log().count("Disconnected from client")


def test_completion_and_inline_completion_through_the_engine(engine, tmp_path):
    peer = _server(tmp_path, engine.url)
    _open(peer, SHORT)
    before = _posts(engine)
    text, trace = _complete(peer, SHORT)
    assert text.strip() and trace["generated_tokens"] > 0
    assert trace["backend"] == f"engine {engine.url}" and trace["model"] == "gemma-3-270m-q4_k_m.gguf"
    assert trace["token_counting"].startswith("model tokenizer") and not trace["fallback"]
    assert {"prompt_eval", "decode"} <= trace["timings_ms"].keys()
    inline = peer.request("textDocument/inlineCompletion", {**_at_end(SHORT), "context": {"triggerKind": 1}})
    assert inline["result"]["items"][0]["insertText"].strip()
    assert _posts(engine) == before + 2
    assert not _messages(peer)
    peer.close()


def test_greedy_generation_matches_the_in_process_model(engine):
    settings = Settings()
    settings.engine.url = engine.url
    remote = RemoteEngine(settings.engine)
    remote.adopt_tokenizer(local_generator_path(settings))
    local = LlamaModel(local_generator_path(settings), 1024, 1)
    # Prompts whose greedy path has no near-tie: elsewhere the engine's reuse of its cached
    # prompt prefix can move the last digits of the logits and flip a tie (same as in-process).
    for prompt in (SHORT, LONG):
        over_http, in_process = (backend.generate(prompt, 16, threading.Event()) for backend in (remote, local))
        assert over_http.text == in_process.text
        assert over_http.logprobs == pytest.approx(in_process.logprobs, abs=0.05)
        assert remote.count_tokens(prompt) == local.count_tokens(prompt)
    remote.close()


def test_reward_scores_through_the_engine_match_the_in_process_ones(engine):
    settings = Settings()
    settings.engine.url, settings.engine.timeout = engine.url, 600  # its prompt log-probabilities are slow
    remote = RemoteEngine(settings.engine)
    remote.adopt_tokenizer(local_generator_path(settings))
    on_engine, in_process = EngineScorer(remote), TargetScorer(LlamaModel(local_generator_path(settings), 1024, 1))
    prompt, target = "def add(a, b):\n", "    return a + b\n"
    (over_http,), (local,) = (scorer.score_all([prompt], target) for scorer in (on_engine, in_process))
    assert len(over_http.logprobs) == len(local.logprobs)
    assert over_http.mean == pytest.approx(local.mean, abs=0.05)
    assert on_engine.facts()["generator"] == in_process.facts()["generator"]  # the same model, named alike
    on_engine.close()
    in_process.close()


def _echo(text: str, tokens: list[str], logprobs: list) -> bytes:
    """An answer with the prompt's log-probabilities, as OpenAI's completion format has them."""
    offsets = [sum(len(token) for token in tokens[:i]) for i in range(len(tokens))]
    return json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": {
        "tokens": tokens, "text_offset": offsets, "token_logprobs": logprobs}}]}).encode()


def test_engine_scores_take_the_target_tokens_and_a_token_across_its_start():
    tokens = ["def", " f", "():", "\n", "   ", " return", " 1", "\n"]  # the last one generated
    answer = _echo("".join(tokens), tokens, [None, -1.0, -1.0, -1.0, -2.0, -3.0, -4.0, -9.0])
    fake = FakeEngine(lambda handler, count: send(handler, 200, "application/json", answer))
    settings = Settings()
    settings.engine.url = fake.url
    scorer = EngineScorer(RemoteEngine(settings.engine))
    prompt, target = "def f():\n  ", "  return 1"  # "   " starts in the prompt and ends in the target
    (scored,) = scorer.score_all([prompt], target)
    assert scored.logprobs == [-2.0, -3.0, -4.0] and scored.prompt_tokens == 5
    body = json.loads(fake.bodies[-1])
    assert body["prompt"] == prompt + target and body["echo"] is True and body["stream"] is False
    scorer.close()
    fake.close()


def test_an_engine_without_prompt_log_probabilities_is_a_clear_error():
    answer = b'{"choices": [{"index": 0, "text": "def f():\\n    return 1", "finish_reason": "length"}]}'
    fake = FakeEngine(lambda handler, count: send(handler, 200, "application/json", answer))
    settings = Settings()
    settings.engine.url = fake.url
    scorer = EngineScorer(RemoteEngine(settings.engine))
    with pytest.raises(ModelUnavailable, match="gives no log-probabilities of the prompt"):
        scorer.score_all(["def f():\n"], "    return 1")
    scorer.close()
    fake.close()


def test_a_cancelled_completion_stops_the_engine(engine, tmp_path):
    peer = _server(tmp_path, engine.url, options={**OPTIONS, "model": {"maxTokens": 1024},
                                                  "completion": {"maxLines": 200}})
    _open(peer, LONG)
    before = _posts(engine)
    peer.send({"id": "long", "method": "textDocument/completion", "params": _at_end(LONG)})
    deadline = time.monotonic() + 60
    while _posts(engine) == before:  # the engine has begun streaming
        assert time.monotonic() < deadline, "the engine never got the request"
        time.sleep(0.05)
    time.sleep(1.0)
    disconnects = _disconnects(engine)
    cancelled = time.monotonic()
    peer.notify("$/cancelRequest", {"id": "long"})
    assert peer.response("long", timeout=30)["error"]["code"] == -32800
    while _disconnects(engine) == disconnects:
        assert time.monotonic() - cancelled < 5, "the engine went on generating after the cancellation"
        time.sleep(0.02)
    peer.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2},
                                           "contentChanges": [{"text": SHORT}]})
    text, trace = _complete(peer, SHORT)  # the engine is free again at once, not after 1024 tokens
    assert trace["backend"] == f"engine {engine.url}" and text.strip()
    assert time.monotonic() - cancelled < 20
    peer.close()


def test_engine_down_then_fallback_then_back(engine, tmp_path):
    peer = _server(tmp_path, engine.url)
    _open(peer, SHORT)
    answer, trace = _complete(peer, SHORT)
    assert answer.strip() and trace["backend"].startswith("engine")

    engine.stop()
    try:
        assert _complete(peer, SHORT) == ("", None)
        assert _complete(peer, SHORT) == ("", None)
        errors = _messages(peer)
        assert len(errors) == 1 and errors[0]["type"] == 1, errors  # one error message, not one per request
        assert f"the inference engine at {engine.url} is not reachable" in errors[0]["message"]

        peer.notify("workspace/didChangeConfiguration", {"settings": {"engine": {"fallback": True}}})
        local, trace = _complete(peer, SHORT)
        assert trace["backend"] == "llama.cpp in-process" and "is not reachable" in trace["fallback"]
        assert local == answer  # greedy decoding: the engine and the in-process model agree
        _complete(peer, SHORT)
        warnings = _messages(peer)[1:]
        assert len(warnings) == 1 and warnings[0]["type"] == 2, warnings
        assert "completing with the in-process model meanwhile" in warnings[0]["message"]
    finally:
        engine.start()
    deadline = time.monotonic() + 30  # the in-process model answers until a probe finds the engine back
    while (result := _complete(peer, SHORT))[1]["backend"] != f"engine {engine.url}":
        assert time.monotonic() < deadline, result
        time.sleep(0.5)
    again, trace = result
    assert again == answer
    peer.close()
    assert b"answers again" in b"".join(peer.stderr_lines)


def test_doctor_checks_the_engine(engine):
    doctor = [sys.executable, "-m", "aligncoder_lsp", "doctor", "--engine"]
    up = subprocess.run([*doctor, engine.url], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"url        {engine.url} (reachable" in up.stdout and "gemma-3-270m-q4_k_m.gguf" in up.stdout
    assert "tokens     model tokenizer (gemma-3-270m-q4_k_m.gguf, local)" in up.stdout
    assert "kind       OpenAI-compatible; left to right" in up.stdout
    assert re.search(r"completion \d+ tokens in \d+ ms \(first after \d+ ms\)", up.stdout), up.stdout
    down = subprocess.run([*doctor, f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=300)
    assert down.returncode == 1 and "UNAVAILABLE: the inference engine at" in down.stdout, down.stdout
    assert "status: PROBLEMS FOUND" in down.stdout


def test_a_slow_engine_times_out(tmp_path):
    fake = FakeEngine(lambda handler, count: time.sleep(10))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"engine": {"timeout": 1, "retries": 0}}))
    peer = _server(tmp_path, fake.url, "--model", "/nonexistent/model.gguf", "--config", str(config))
    _open(peer, SHORT)
    started = time.monotonic()
    assert _complete(peer, SHORT) == ("", None)
    assert time.monotonic() - started < 8
    messages = _messages(peer)
    assert len(messages) == 1 and "did not answer within engine.timeout (1 s)" in messages[0]["message"]
    peer.close()
    fake.close()


@pytest.mark.parametrize("body", [b"data: {not json\n\n", b"<html>502 from a proxy</html>"])
def test_a_malformed_answer_is_one_clear_error(tmp_path, body):
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream", body))
    peer = _server(tmp_path, fake.url, "--model", "/nonexistent/model.gguf")
    _open(peer, SHORT)
    assert _complete(peer, SHORT) == ("", None)
    assert _complete(peer, SHORT) == ("", None)
    messages = _messages(peer)
    assert len(messages) == 1 and "sent a malformed response" in messages[0]["message"], messages
    status = peer.request("workspace/executeCommand", {"command": "aligncoder.indexStatus"})
    assert "result" in status  # the server goes on
    peer.close()
    fake.close()


def test_an_engine_down_from_the_start(tmp_path):
    peer = _server(tmp_path, f"http://127.0.0.1:{free_port()}", "--model", "/nonexistent/model.gguf")
    _open(peer, SHORT)
    assert _complete(peer, SHORT) == ("", None)
    messages = _messages(peer)
    assert len(messages) == 1 and "is not reachable" in messages[0]["message"], messages
    peer.close()
