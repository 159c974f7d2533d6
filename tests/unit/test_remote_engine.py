"""The engine client against engines that misbehave on purpose (a tiny local HTTP server):
the cut and cancellation close the stream, retries, timeouts, malformed answers, drafts, keys."""

import json
import threading
import time

import pytest

from aligncoder_lsp.config import ENGINE_FIM_FAMILIES, EngineSettings
from aligncoder_lsp.models.llama_backend import Cancelled, Generation
from aligncoder_lsp.models.remote import FIM_TEXTS, INFILL, EngineDown, EngineUnavailable, EngineWithFallback, RemoteEngine
from tests.engines import FakeEngine, events, free_port, send


def _engine(url: str, **settings) -> RemoteEngine:
    return RemoteEngine(EngineSettings(url=url, **{"retries": 0, **settings}))


@pytest.fixture
def endless():
    """An engine that streams one line per 20 ms until the client goes away."""
    gone = threading.Event()

    def reply(handler, count):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        try:
            for number in range(500):
                chunk = {"choices": [{"index": 0, "text": f"x = {number}\n", "finish_reason": None}]}
                handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                handler.wfile.flush()
                time.sleep(0.02)
        except OSError:
            gone.set()

    engine = FakeEngine(reply)
    engine.gone = gone
    yield engine
    engine.close()


def test_the_cut_closes_the_stream(endless):
    engine = _engine(endless.url)
    generation = engine.generate("", 1000, threading.Event(), should_stop=lambda text: text.count("\n") >= 2)
    assert (generation.text, generation.stopped_by, generation.generated_tokens) == ("x = 0\nx = 1\n", "stop", 2)
    assert endless.gone.wait(5), "the engine went on streaming after the cut"
    engine.close()


def test_a_cancelled_request_closes_its_stream_at_once(endless):
    engine = _engine(endless.url)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        engine.generate("", 1000, cancel)
    assert time.perf_counter() - started < 2
    assert endless.gone.wait(5), "the engine went on streaming after the cancellation"
    engine.close()


def test_a_busy_engine_is_asked_again():
    fake = FakeEngine(lambda handler, count: send(handler, 503, "text/plain", b"busy") if count == 1
                      else send(handler, 200, "text/event-stream", events("ok")))
    engine = _engine(fake.url, retries=2)
    assert engine.generate("", 8, threading.Event()).text == "ok"
    assert fake.requests == 2
    engine.close()
    fake.close()


def test_a_busy_engine_is_not_asked_again_without_logprobs():
    fake = FakeEngine(lambda handler, count: send(handler, 503, "text/plain", b"busy"))
    engine = _engine(fake.url)
    with pytest.raises(EngineUnavailable, match="is busy"):
        engine.generate("", 8, threading.Event())
    assert fake.requests == 1  # retries 0: one request, not a second one without log-probabilities
    engine.close()
    fake.close()


def test_an_engine_that_is_down_is_one_clear_error():
    engine = _engine(f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(EngineUnavailable, match="is not reachable"):
        engine.generate("", 8, threading.Event())
    engine.close()


def test_a_slow_engine_times_out():
    fake = FakeEngine(lambda handler, count: (time.sleep(3), send(handler, 200, "text/event-stream", events("late"))))
    engine = _engine(fake.url, timeout=0.5)
    started = time.perf_counter()
    with pytest.raises(EngineUnavailable, match=r"did not answer within engine.timeout \(0.5 s\)"):
        engine.generate("", 8, threading.Event())
    assert time.perf_counter() - started < 2.5
    engine.close()
    fake.close()


def test_a_slow_first_token_within_the_timeout_is_waited_for():
    fake = FakeEngine(lambda handler, count: (time.sleep(6), send(handler, 200, "text/event-stream", events("late"))))
    engine = _engine(fake.url, timeout=20)  # a long prompt on a busy CPU engine: seconds before the first token
    assert engine.generate("", 8, threading.Event()).text == "late"
    engine.close()
    fake.close()


@pytest.mark.parametrize(("status", "content_type", "body", "error"), [
    (200, "text/event-stream", b"data: {not json\n\n", "malformed response"),
    (200, "text/event-stream", b'data: {"choices": "none"}\n\n', "malformed response"),
    (200, "text/event-stream", b'data: {"choices": [{"text": 7}]}\n\n', "malformed response"),
    (200, "text/html", b"<html>proxy login</html>", "malformed response"),
    (200, "text/event-stream", b"<html>proxy login</html>", "malformed response"),  # was an empty answer
    (200, "text/event-stream", b'data: {"choices": [{"index": 0, "text": "par"}]}\n\n', "malformed response"),
    (200, "application/json", b'{"error": {"message": "model not loaded"}}', "malformed response"),
    (500, "text/plain", b"Traceback...", r"refused the request \(HTTP 500"),
])
def test_malformed_answers_are_clear_errors(status, content_type, body, error):
    fake = FakeEngine(lambda handler, count: send(handler, status, content_type, body))
    engine = _engine(fake.url)
    with pytest.raises(EngineUnavailable, match=error):
        engine.generate("", 8, threading.Event())
    engine.close()
    fake.close()


def test_token_logprobs_are_taken_where_the_engine_sends_them():
    chunks = [{"index": 0, "text": "a", "logprobs": {"token_logprobs": [-0.5]}},
              {"index": 0, "text": "b", "logprobs": None},
              {"index": 0, "text": "c", "logprobs": {"token_logprobs": "bogus"}},
              {"index": 0, "text": "d", "logprobs": {"token_logprobs": [-1.25, None]}, "finish_reason": "length"}]
    body = b"".join(b"data: %s\n\n" % json.dumps({"choices": [chunk]}).encode() for chunk in chunks)
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream", body + b"data: [DONE]\n\n"))
    engine = _engine(fake.url)
    generation = engine.generate("", 8, threading.Event())
    assert (generation.text, generation.logprobs, generation.stopped_by) == ("abcd", [-0.5, -1.25], "max_tokens")
    engine.close()
    fake.close()


def test_an_engine_without_logprobs_is_asked_without_them():
    asked = []

    def reply(handler, count):
        body = json.loads(handler.rfile_body)
        asked.append("logprobs" in body)
        # llama-cpp-python's server without logits_all ends such a stream at once
        send(handler, 200, "text/event-stream", b"" if "logprobs" in body else events("ok"))

    fake = FakeEngine(reply)
    engine = _engine(fake.url)
    assert engine.generate("", 8, threading.Event()).text == "ok"
    assert engine.generate("", 8, threading.Event()).text == "ok"
    assert asked == [True, False, False]
    engine.close()
    fake.close()


def test_a_whole_json_answer_is_taken_as_well():
    body = json.dumps({"choices": [{"index": 0, "text": "done()", "finish_reason": "stop"}]}).encode()
    fake = FakeEngine(lambda handler, count: send(handler, 200, "application/json", body))
    engine = _engine(fake.url)
    generation = engine.generate("", 8, threading.Event())
    assert (generation.text, generation.stopped_by) == ("done()", "eos")
    engine.close()
    fake.close()


def test_drafts_are_one_request_where_the_engine_honours_n():
    seen = []

    def reply(handler, count):
        chunks = b"".join(b'data: {"choices": [{"index": %d, "text": "d%d", "finish_reason": "stop"}]}\n\n' % (i, i)
                          for i in range(3))
        send(handler, 200, "text/event-stream", chunks + b"data: [DONE]\n\n")
        seen.append(count)

    fake = FakeEngine(reply)
    engine = _engine(fake.url)
    assert engine.drafts("", 3, 8, threading.Event()).texts == ["d0", "d1", "d2"]
    assert fake.requests == 1
    engine.close()
    fake.close()


def test_drafts_go_as_parallel_requests_where_n_is_ignored():
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream", events(f"d{count}")))
    engine = _engine(fake.url)
    assert sorted(engine.drafts("", 3, 8, threading.Event()).texts) == ["d1", "d2", "d3"]
    assert fake.requests == 3  # one with n = 3 that gave one choice, then two more
    assert len(engine.drafts("", 3, 8, threading.Event()).texts) == 3
    assert fake.requests == 6  # from then on, k requests at once
    engine.close()
    fake.close()


def test_the_api_key_comes_from_the_named_variable(monkeypatch):
    headers = []
    fake = FakeEngine(lambda handler, count: (headers.append(handler.headers.get("Authorization")),
                                              send(handler, 200, "text/event-stream", events("ok"))))
    monkeypatch.setenv("TEST_ENGINE_KEY", "sk-test")
    engine = _engine(fake.url, api_key_env="TEST_ENGINE_KEY")
    engine.generate("", 8, threading.Event())
    assert headers == ["Bearer sk-test"]
    engine.close()
    fake.close()


class _Local:
    """Stands in for the in-process model (a unit test of the fallback's choice only)."""

    name = "llama.cpp in-process"

    def generate(self, prompt, max_tokens, cancel, should_stop=lambda _: False, suffix="", heal=False):
        return Generation("local()", 1, 0, 1, 0.0, 0.0, "eos", [])

    def close(self):
        pass


def test_fallback_to_the_local_model_only_when_asked():
    settings = EngineSettings(url=f"http://127.0.0.1:{free_port()}", retries=0)
    backend = EngineWithFallback(RemoteEngine(settings), _Local)
    with pytest.raises(EngineUnavailable):
        backend.generate("", 8, threading.Event())
    settings.fallback = True
    generation = backend.generate("", 8, threading.Event())
    assert (generation.text, generation.backend) == ("local()", "llama.cpp in-process")
    assert "is not reachable" in generation.fallback
    backend.close()


def test_an_engine_found_down_is_probed_instead_of_asked_per_request():
    healthy = threading.Event()
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream", events("remote"))
                      if healthy.is_set() else send(handler, 503, "text/plain", b"busy"))
    backend = EngineWithFallback(_engine(fake.url, fallback=True), _Local)
    first = backend.generate("", 8, threading.Event())
    assert first.text == "local()" and "is busy" in first.fallback
    asked = fake.requests
    second = backend.generate("", 8, threading.Event())
    assert second.text == "local()" and "is busy" in second.fallback
    assert fake.requests == asked  # answered at once, without waiting for the engine
    healthy.set()
    deadline = time.monotonic() + 10
    while backend.generate("", 8, threading.Event()).text != "remote":
        assert time.monotonic() < deadline, "the engine did not come back"
        time.sleep(0.1)
    backend.close()
    fake.close()


LLAMA_CPP = {"/props": (200, json.dumps({"default_generation_settings": {"n_ctx": 4096}, "build_info": "b1",
                                          "model_path": "/m/x.gguf"}).encode())}
"""What a llama.cpp server answers to ``GET /props``."""


def _native(*texts: str) -> bytes:
    """llama.cpp's own streamed format (``/infill``): the engine's timings with each token."""
    timings = {"cache_n": 30, "prompt_n": 12, "prompt_ms": 40.0}
    chunks = [{"content": text, "stop": False, "timings": timings,
               "completion_probabilities": [{"token": text, "logprob": -0.5}]} for text in texts]
    chunks.append({"content": "", "stop": True, "stop_type": "eos", "timings": timings})
    return b"".join(b"data: %s\n\n" % json.dumps(chunk).encode() for chunk in chunks)


def test_llama_cpp_infill_gets_the_snippets_as_extra_input_and_its_counts_are_taken():
    from aligncoder_lsp.models.prompts import render_context

    def reply(handler, count):
        if handler.path == "/infill" and json.loads(handler.rfile_body).get("stream"):
            send(handler, 200, "text/event-stream", _native("x", " + 1"))
        else:
            send(handler, 200, "application/json", b'{"content": "", "stop": true}')

    fake = FakeEngine(reply, gets=LLAMA_CPP)
    engine = _engine(fake.url)
    engine.detect()
    assert engine.llama_cpp and engine.fim.family == "llama.cpp /infill"
    assert engine.name == f"llama.cpp server {fake.url}"
    context = render_context([("util.py", "def one():\n    return 1")], "python")
    generation = engine.generate(context + "y = ", 8, threading.Event(), suffix="\nprint(y)\n", context=context)
    assert (generation.text, generation.stopped_by, generation.logprobs) == ("x + 1", "eos", [-0.5, -0.5])
    assert (generation.prompt_tokens, generation.reused_tokens) == (42, 30)
    body = json.loads(fake.bodies[-1])
    assert fake.paths == ["/infill", "/infill"]  # the probe, then the completion
    assert body["input_prefix"] == "y = " and body["input_suffix"] == "\nprint(y)\n"
    assert body["input_extra"] == [{"filename": "util.py", "text": "def one():\n    return 1"}]
    assert body["cache_prompt"] is True and body["temperature"] == 0.0
    engine.close()
    fake.close()


def test_llama_cpp_without_fim_tokens_and_other_engines_complete_left_to_right():
    def reply(handler, count):
        if handler.path == "/infill":
            send(handler, 501, "application/json", b'{"error": {"message": "Infill is not supported"}}')
        else:
            send(handler, 200, "text/event-stream", events("ok"))

    for gets in (LLAMA_CPP, None):
        fake = FakeEngine(reply, gets=gets)
        engine = _engine(fake.url)
        engine.detect()
        assert engine.fim is None and engine.llama_cpp == (gets is not None)
        assert engine.generate("y = ", 8, threading.Event(), suffix="\nprint(y)\n").text == "ok"
        body = json.loads(fake.bodies[-1])
        assert fake.paths[-1] == "/v1/completions" and body["prompt"] == "y = "
        assert body.get("cache_prompt") is (True if gets else None)
        engine.close()
        fake.close()


def test_a_fim_family_in_the_settings_writes_its_tokens_into_the_prompt():
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream", events("1")))
    engine = _engine(fake.url, fim="qwen-coder")
    engine.detect()
    assert engine.generate("y = ", 8, threading.Event(), suffix="\nprint(y)\n").text == "1"
    assert json.loads(fake.bodies[-1])["prompt"] == "<|fim_prefix|>y = <|fim_suffix|>\nprint(y)\n<|fim_middle|>"
    engine.generate("y = ", 8, threading.Event())  # nothing after the cursor: left to right
    assert json.loads(fake.bodies[-1])["prompt"] == "y = "
    engine.close()
    fake.close()


def test_llama_cpp_chat_style_logprobs_are_read():
    chunk = {"choices": [{"index": 0, "text": "a", "finish_reason": "stop",
                          "logprobs": {"content": [{"token": "a", "logprob": -0.25}, {"logprob": "x"}]}}]}
    fake = FakeEngine(lambda handler, count: send(handler, 200, "text/event-stream",
                                                  b"data: %s\n\ndata: [DONE]\n\n" % json.dumps(chunk).encode()))
    engine = _engine(fake.url)
    assert engine.generate("", 8, threading.Event()).logprobs == [-0.25]
    engine.close()
    fake.close()


def test_a_malformed_native_chunk_is_a_clear_error():
    def reply(handler, count):
        if handler.path == "/infill" and count > 1:
            send(handler, 200, "text/event-stream", b'data: {"content": 3}\n\n')
        else:
            send(handler, 200, "application/json", b"{}")

    fake = FakeEngine(reply, gets=LLAMA_CPP)
    engine = _engine(fake.url)
    engine.detect()
    with pytest.raises(EngineUnavailable, match="malformed"):
        engine.generate("y = ", 8, threading.Event(), suffix="\n")
    engine.close()
    fake.close()


def test_reward_scoring_on_llama_cpp_is_a_clear_error_before_any_request():
    fake = FakeEngine(lambda handler, count: send(handler, 500, "application/json", b"{}"), gets=LLAMA_CPP)
    engine = _engine(fake.url, fim="none")
    engine.detect()
    with pytest.raises(EngineUnavailable, match="gives no log-probabilities of the prompt"):
        engine.target_scores(["def f():\n"], "    return 1", threading.Event())
    assert fake.requests == 0
    engine.close()
    fake.close()


def test_an_engine_whose_model_lost_its_fim_tokens_goes_left_to_right():
    def reply(handler, count):
        if handler.path == "/infill":  # the probe passes; then the engine serves another model
            send(handler, 200 if count == 1 else 501, "application/json", b'{"content": "", "stop": true}')
        else:
            send(handler, 200, "text/event-stream", events("ok"))

    fake = FakeEngine(reply, gets=LLAMA_CPP)
    engine = _engine(fake.url)
    engine.detect()
    wrapped = EngineWithFallback(engine, lambda: None)
    assert wrapped.fim is INFILL
    assert engine.generate("y = ", 8, threading.Event(), suffix="\nprint(y)\n").text == "ok"
    assert fake.paths == ["/infill", "/infill", "/v1/completions"] and wrapped.fim is None
    assert json.loads(fake.bodies[-1])["prompt"] == "y = "
    engine.close()
    fake.close()


@pytest.mark.parametrize("status, body, kind", [
    (503, b"{}", EngineDown),  # busy: an answer for the probe and doctor, not an escaped retry
    (500, b"{}", EngineUnavailable),
    (200, b'{"data": 3}', EngineUnavailable),
    (200, b"not json", EngineUnavailable),
])
def test_a_model_list_that_cannot_be_had_is_one_clear_error(status, body, kind):
    fake = FakeEngine(lambda handler, count: None, gets={"/v1/models": (status, body)})
    engine = _engine(fake.url)
    with pytest.raises(kind, match="the inference engine at"):
        engine.models()
    engine.close()
    fake.close()


def test_every_fim_family_the_settings_name_has_its_tokens():
    assert set(FIM_TEXTS) == set(ENGINE_FIM_FAMILIES)
