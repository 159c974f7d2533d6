"""A remote inference engine over HTTP: any OpenAI-compatible ``/v1/completions`` (llama.cpp's
server, llama-cpp-python's, vLLM, TGI, Ollama).

Completions stream (server-sent events), so the same ``should_stop`` cut as in-process
generation closes the stream as soon as the answer is whole, and a cancelled request closes
it at once: the engine sees the disconnect and stops generating. The HTTP client is async and
lives on an event loop thread of its own; the model thread waits on it and polls the
request's cancel event.

Prompt budgets count tokens with the local GGUF tokenizer when the engine serves the same
model, otherwise with an estimate of :data:`CHARS_PER_TOKEN` characters per token.

llama.cpp's server is recognised by its ``/props``: requests then keep the prompt's KV cache
(``cache_prompt``) and report the engine's own token counts; with a model that has FIM tokens,
completions inside code go to its ``/infill``, the retrieved snippets as ``input_extra``.
Other engines fill in the middle when ``engine.fim`` names the model's family.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from aligncoder_lsp.config import EngineSettings
from aligncoder_lsp.models.backend import Backend
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.models.llama_backend import Cancelled, Drafts, Generation, TargetScore, gguf_token_counter

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHARS_PER_TOKEN = 3
"""Characters per token of the estimate (code runs 3 to 4; the lower bound keeps prompts within budget)."""
CANCEL_POLL_SECONDS = 0.01
"""How often the model thread looks at the cancel event while the engine works."""
BACKOFF_SECONDS = 0.25
"""First wait before a retry; doubled at each further one."""
PROBE_SECONDS = 1.0
"""How often an engine found down is asked whether it is back (with ``engine.fallback``)."""
RETRY_STATUS = frozenset({429, 502, 503, 504})
"""Answers of a busy or restarting engine, worth another attempt."""
FIM_TEXTS = {
    "qwen-coder": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    "codegemma": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "deepseek-coder": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    "codellama": ("<PRE> ", " <SUF>", " <MID>"),
}
"""Each family's FIM tokens (prefix, suffix, middle) as prompt text, in the models' own spelling."""


@dataclass(frozen=True)
class EngineFim:
    """How the engine fills in the middle."""

    family: str
    tokens: tuple[str, str, str] | None = None
    """The FIM tokens written into the prompt; None: the engine's ``/infill`` lays it out."""

    def prompt(self, before: str, after: str) -> str:
        prefix, suffix, middle = self.tokens or ("", "", "")
        return f"{prefix}{before}{suffix}{after}{middle}"


INFILL = EngineFim("llama.cpp /infill")


class EngineUnavailable(ModelUnavailable):
    """The engine could not answer: not reachable, too slow, refused, or a malformed answer.
    The message names the engine and the kind of problem only, so repeats read the same."""


class EngineDown(EngineUnavailable):
    """Not reachable, busy after every retry, or too slow: asking again otherwise would not help."""


class EngineRefused(EngineUnavailable):
    """The engine answered the request with an error status (``status``)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    """A failure worth another attempt (the engine refused the connection or is busy)."""


@dataclass
class _Stream:
    """What the choices of one completion request streamed."""

    texts: list[str]
    finished: list[str]
    """Why each choice ended: ``stop`` (the cut), ``eos`` (the engine stopped), ``max_tokens``."""
    chunks: list[int]
    logprobs: list[list[float]]
    """Log-probability of each streamed token, where the engine sent them."""
    seen: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    first_at: float | None = None
    timings: dict = field(default_factory=dict)
    """The engine's own figures of the request, where it sends them (llama.cpp: ``timings``)."""

    @classmethod
    def of(cls, n: int) -> _Stream:
        return cls([""] * n, ["max_tokens"] * n, [0] * n, [[] for _ in range(n)])


class RemoteEngine:
    """The backend of an engine at ``settings.url`` (read once; the rest of ``settings`` live)."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.name = f"engine {self.url}"
        self.llama_cpp = False
        """Whether the engine is llama.cpp's server (see :meth:`detect`)."""
        self.fim: EngineFim | None = EngineFim(settings.fim, FIM_TEXTS[settings.fim]) \
            if settings.fim in FIM_TEXTS else None
        self.model_name = settings.model or "(engine default)"
        self._count: Callable[[str], int] | None = None
        self.token_counting = f"estimate ({CHARS_PER_TOKEN} characters per token)"
        self._n_works: bool | None = None
        """Whether the engine honours ``n`` (several choices per request); None until tried."""
        self._logprobs_work: bool | None = None
        """Whether the engine answers requests for log-probabilities; None until tried."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-client", daemon=True)
        self._thread.start()
        self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers(),
                                         limits=httpx.Limits(max_connections=settings.concurrency))
        self._slots = asyncio.Semaphore(settings.concurrency)

    def _headers(self) -> dict[str, str]:
        variable = self.settings.api_key_env
        if not variable:
            return {}
        key = os.environ.get(variable)
        if not key:
            logger.warning("engine.apiKeyEnv names $%s, which is not set: requests go without an API key", variable)
            return {}
        return {"Authorization": f"Bearer {key}"}

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def adopt_tokenizer(self, local: Path) -> None:
        """Count tokens with the GGUF file ``local``'s tokenizer when the engine lists a model of
        the same file name (llama.cpp-based engines list the file they serve); otherwise, or
        when the engine cannot say, keep the estimate."""
        try:
            ids = self.models()
        except EngineUnavailable as error:
            logger.info("%s; prompt budgets use the token estimate", error)
            return
        names = [self.settings.model] + ids if self.settings.model else ids
        if not any(Path(name).stem == local.stem for name in names):
            logger.info("%s serves %s, not %s: prompt budgets use the token estimate", self.name, ids, local.name)
            return
        self._count = gguf_token_counter(local)
        self.model_name = local.name
        self.token_counting = f"model tokenizer ({local.name}, local)"

    def detect(self) -> None:
        """Ask the engine what it is. llama.cpp's server answers ``/props``: its requests then
        keep the KV cache of the prompt, and with ``engine.fim`` ``auto`` its ``/infill`` fills
        in the middle when the model it serves has FIM tokens (it refuses otherwise)."""
        cancel = threading.Event()
        try:
            props = self._wait(self._answer_json("GET", "/props"), cancel)
        except EngineUnavailable as error:
            logger.info("%s has no llama.cpp /props (%s): OpenAI-compatible requests only", self.name, error)
            return
        if not isinstance(props, dict) or "default_generation_settings" not in props:
            return
        self.llama_cpp = True
        self.name = f"llama.cpp server {self.url}"
        if self.settings.fim == "auto":
            probe = {"input_prefix": "def f(", "input_suffix": "):\n", "n_predict": 1, "temperature": 0.0}
            try:
                self._wait(self._answer_json("POST", "/infill", probe), cancel)
                self.fim = INFILL
            except EngineUnavailable as error:
                logger.info("%s: no /infill for this model (%s): prompts are left to right", self.name, error)
        logger.info("%s (build %s) serves %s; %s", self.name, props.get("build_info", "?"),
                    props.get("model_path", "?"), f"fill-in-the-middle: {self.fim.family}" if self.fim else "left to right")

    async def _shutdown(self) -> None:
        await self._client.aclose()
        await self._loop.shutdown_asyncgens()

    # -- the backend interface -------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self._count(text) if self._count else math.ceil(len(text) / CHARS_PER_TOKEN)

    def generate(self, prompt: str, max_tokens: int, cancel: threading.Event,
                 should_stop: Callable[[str], bool] = lambda _: False, suffix: str = "",
                 heal: bool = False, context: str = "") -> Generation:
        """Greedy continuation streamed from the engine, filling in before ``suffix`` when the
        engine can (``heal`` is not used: the engine gets the prompt as it is)."""
        started = time.perf_counter()
        stream = None
        if suffix and self.fim is INFILL:
            try:
                stream = self._wait(self._complete(self._infill_body(prompt, suffix, context, max_tokens), 1,
                                                   should_stop, "/infill"), cancel)
            except EngineRefused as error:
                if error.status != 501:
                    raise
                logger.info("%s no longer fills in the middle (its model changed?): prompts are left to right",
                            self.name)
                self.fim = None
        if stream is None:
            if suffix and self.fim is not None:
                prompt = self.fim.prompt(prompt, suffix)
            stream = self._greedy(self._body(prompt, max_tokens, temperature=0.0), should_stop, cancel)
        first = stream.first_at or time.perf_counter()
        evaluated, reused = stream.timings.get("prompt_n"), stream.timings.get("cache_n")
        counted = isinstance(evaluated, int) and isinstance(reused, int)
        return Generation(text=stream.texts[0], prompt_tokens=evaluated + reused if counted else self.count_tokens(prompt),
                          reused_tokens=reused if counted else 0,
                          generated_tokens=stream.chunks[0], prompt_ms=(first - started) * 1000,
                          generate_ms=(time.perf_counter() - first) * 1000, stopped_by=stream.finished[0],
                          logprobs=stream.logprobs[0])

    def _infill_body(self, prompt: str, suffix: str, context: str, max_tokens: int) -> dict[str, Any]:
        """A request to llama.cpp's ``/infill``: the snippets of ``context`` (the prompt's head)
        as its ``input_extra``, the rest of the prompt as the prefix."""
        pieces = getattr(context, "pieces", ())
        before = prompt[len(context):] if pieces and prompt.startswith(context) else prompt
        return {**self._native(), "input_prefix": before, "input_suffix": suffix, "n_predict": max_tokens,
                "input_extra": [{"filename": path, "text": text} for path, text in pieces],
                "temperature": 0.0, "stream": True, "n_probs": 1}

    def _native(self) -> dict[str, Any]:
        """What every request to llama.cpp's server carries: keep the prompt's KV cache for the
        next one, and send the engine's token counts with the first streamed token."""
        return {"cache_prompt": True, "timings_per_token": True} if self.llama_cpp else {}

    def _greedy(self, body: dict[str, Any], should_stop: Callable[[str], bool], cancel: threading.Event) -> _Stream:
        """One greedy completion, with the tokens' log-probabilities (the selective policy reads
        them) until the engine fails a request for them and answers one without them
        (llama-cpp-python's server started without ``logits_all``)."""
        if self._logprobs_work is False:
            return self._wait(self._complete(body, 1, should_stop), cancel)
        try:
            stream = self._wait(self._complete({**body, "logprobs": 1}, 1, should_stop), cancel)
        except EngineUnavailable as error:
            if self._logprobs_work or isinstance(error, EngineDown):
                raise
            stream = self._wait(self._complete(body, 1, should_stop), cancel)
            logger.info("%s gives no log-probabilities: the selective policy sees none", self.name)
            self._logprobs_work = False
            return stream
        self._logprobs_work = True
        return stream

    def drafts(self, prompt: str, k: int, max_tokens: int, cancel: threading.Event,
               should_stop: Callable[[str], bool] = lambda _: False,
               temperature: float = 0.8, top_p: float = 0.95) -> Drafts:
        """``k`` samples: one request with ``n = k`` where the engine honours it, otherwise
        ``k`` requests at once (within ``engine.concurrency``)."""
        started = time.perf_counter()
        body = self._body(prompt, max_tokens, temperature=temperature, top_p=top_p)
        texts = self._wait(self._samples(body, k, should_stop), cancel)
        elapsed = (time.perf_counter() - started) * 1000
        return Drafts(texts, self.count_tokens(prompt), 0, 0.0, elapsed)

    def target_scores(self, prompts: list[str], target: str, cancel: threading.Event) -> list[TargetScore]:
        """Each prompt's log-probabilities of ``target``, read from the engine's log-probabilities
        of the prompt (``echo`` with ``logprobs``: vLLM, llama-cpp-python's server started with
        ``--logits_all true``); the requests go at once, within ``engine.concurrency``."""
        if self.llama_cpp:
            raise self._problem("is llama.cpp's server, which gives no log-probabilities of the prompt (it has no "
                                "echo); reward scoring needs vLLM, llama-cpp-python's server (--logits_all true) "
                                "or the in-process model")
        return self._wait(self._target_scores(prompts, target), cancel)

    async def _target_scores(self, prompts: list[str], target: str) -> list[TargetScore]:
        return list(await asyncio.gather(*(self._target_score(prompt, target) for prompt in prompts)))

    async def _target_score(self, prompt: str, target: str) -> TargetScore:
        body = {**self._body(prompt + target, 1, temperature=0.0), "stream": False, "echo": True, "logprobs": 0}
        body.pop("stop", None)
        choices = (await self._retrying(lambda: self._answer(body)))["choices"]
        logprobs = choices[0].get("logprobs") if choices else None
        offsets = logprobs.get("text_offset") if isinstance(logprobs, dict) else None
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(offsets, list) or not isinstance(values, list) or len(offsets) != len(values):
            raise self._problem("gives no log-probabilities of the prompt, which reward scoring needs "
                                "(llama-cpp-python's server: --logits_all true)")
        end = len(prompt) + len(target)
        starts = [*offsets[1:], end]
        # target tokens: those that end inside the target and start before its end (a token
        # across the boundary carries target characters); the one generated token is not
        picked = [value for offset, following, value in zip(offsets, starts, values)
                  if isinstance(offset, int) and offset < end and min(following, end) > len(prompt)]
        if any(not isinstance(value, (int, float)) for value in picked):
            raise _malformed(self.url, "a target token without a log-probability")
        return TargetScore([float(value) for value in picked], len(offsets) - len(picked), 0)

    # -- engine facts, for doctor ----------------------------------------------------------

    def models(self, cancel: threading.Event | None = None) -> list[str]:
        """The model ids the engine lists at ``/v1/models``."""
        return self._wait(self._models(), cancel or threading.Event())

    # -- requests --------------------------------------------------------------------------

    def _body(self, prompt: str, max_tokens: int, **sampling: float) -> dict[str, Any]:
        body: dict[str, Any] = {**self._native(), "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                                **sampling}
        if self.settings.model:
            body["model"] = self.settings.model
        if self.settings.stop:
            body["stop"] = list(self.settings.stop)
        return body

    def _wait(self, work: Coroutine[Any, Any, T], cancel: threading.Event) -> T:
        """Run ``work`` on the client's loop; a set ``cancel`` cancels it (closing its streams)."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        while True:
            try:
                return future.result(timeout=CANCEL_POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    future.cancel()
                    raise Cancelled() from None
            except concurrent.futures.CancelledError:
                raise Cancelled() from None

    async def _samples(self, body: dict[str, Any], k: int, should_stop: Callable[[str], bool]) -> list[str]:
        if self._n_works is not False:
            stream = await self._complete({**body, "n": k}, k, should_stop)
            self._n_works = len(stream.seen) == k or k == 1
            if self._n_works:
                return stream.texts
            logger.info("%s answers one choice per request: drafts go as %d parallel requests", self.name, k)
            rest = await asyncio.gather(*(self._complete(body, 1, should_stop) for _ in range(k - len(stream.seen))))
            return [stream.texts[index] for index in sorted(stream.seen)] + [done.texts[0] for done in rest]
        streams = await asyncio.gather(*(self._complete(body, 1, should_stop) for _ in range(k)))
        return [stream.texts[0] for stream in streams]

    async def _complete(self, body: dict[str, Any], n: int, should_stop: Callable[[str], bool],
                        path: str = "/v1/completions") -> _Stream:
        """One completion request with its retries, within the timeout."""
        return await self._retrying(lambda: self._stream(body, n, should_stop, path))

    async def _retrying(self, request: Callable[[], Awaitable[T]]) -> T:
        """``request()`` within a slot and the timeout, again after a busy or unreachable engine."""
        settings = self.settings
        for attempt in range(settings.retries + 1):
            try:
                async with self._slots:
                    return await asyncio.wait_for(request(), settings.timeout)
            except _Retry as problem:
                if attempt == settings.retries:
                    raise self._problem(str(problem), EngineDown) from None
                logger.info("%s %s; trying again (%d of %d)", self.name, problem, attempt + 1, settings.retries)
                await asyncio.sleep(BACKOFF_SECONDS * 2 ** attempt)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                raise self._timed_out() from None
        raise AssertionError("unreachable")

    async def _stream(self, body: dict[str, Any], n: int, should_stop: Callable[[str], bool],
                      path: str = "/v1/completions") -> _Stream:
        """Stream one request's choices, closing the stream once every choice is whole."""
        stream = _Stream.of(n)
        native = path != "/v1/completions"
        try:
            async with self._client.stream("POST", path, json=body, timeout=self.settings.timeout) as response:
                await self._check(response)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    self._take(stream, _parse(await response.aread(), self.url, native), should_stop)
                    return stream
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments (keep-alive pings), event names, blank separators
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        return stream
                    if self._take(stream, _parse(data, self.url, native), should_stop):
                        return stream  # leaving the block closes the stream: the engine stops generating
        except httpx.TransportError as error:
            if isinstance(error, httpx.TimeoutException):
                raise
            raise _Retry(f"is not reachable ({type(error).__name__})") from error
        if len(stream.done) < len(stream.texts):
            raise _malformed(self.url, "the stream ended before the answer did")
        return stream

    async def _answer(self, body: dict[str, Any]) -> dict:
        """One completion request answered whole (not streamed)."""
        try:
            response = await self._client.post("/v1/completions", json=body, timeout=self.settings.timeout)
        except httpx.TransportError as error:
            if isinstance(error, httpx.TimeoutException):
                raise
            raise _Retry(f"is not reachable ({type(error).__name__})") from error
        await self._check(response)
        return _parse(response.content, self.url)

    async def _answer_json(self, method: str, path: str, body: dict | None = None) -> Any:
        """Any JSON answer to one request, within the timeout and without retries (a busy
        engine is one that is down)."""
        try:
            response = await asyncio.wait_for(self._client.request(method, path, json=body,
                                                                   timeout=self.settings.timeout),
                                              self.settings.timeout)
            await self._check(response)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise self._timed_out() from None
        except httpx.TransportError as error:
            raise self._problem(f"is not reachable ({type(error).__name__})", EngineDown) from None
        except _Retry as busy:
            raise self._problem(str(busy), EngineDown) from None
        try:
            return response.json()
        except ValueError:
            raise self._problem(f"sent malformed JSON for {path}") from None

    def _problem(self, what: str, kind: type[EngineUnavailable] = EngineUnavailable) -> EngineUnavailable:
        return kind(f"the inference engine at {self.url} {what}")

    def _timed_out(self) -> EngineUnavailable:
        return self._problem(f"did not answer within engine.timeout ({self.settings.timeout:g} s)", EngineDown)

    async def _check(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        detail = (await response.aread())[:300].decode("utf-8", errors="replace")
        if response.status_code in RETRY_STATUS:
            raise _Retry(f"is busy (HTTP {response.status_code})")
        logger.warning("%s answered HTTP %d: %s", self.name, response.status_code, detail)
        raise EngineRefused(f"the inference engine at {self.url} refused the request "
                            f"(HTTP {response.status_code}; see the log)", response.status_code)

    @staticmethod
    def _take(stream: _Stream, chunk: dict, should_stop: Callable[[str], bool]) -> bool:
        """Add one chunk's text to its choices; whether every choice is whole."""
        for choice in chunk["choices"]:
            index = choice.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < len(stream.texts) or index in stream.done:
                continue
            stream.seen.add(index)
            text = choice.get("text") or ""
            if text:
                stream.first_at = stream.first_at or time.perf_counter()
                stream.texts[index] += text
                stream.chunks[index] += 1
                stream.logprobs[index] += _token_logprobs(choice.get("logprobs"))
            if isinstance(chunk.get("timings"), dict):
                stream.timings = stream.timings or chunk["timings"]
            if text and should_stop(stream.texts[index]):
                stream.finished[index] = "stop"
                stream.done.add(index)
            elif choice.get("finish_reason"):
                stream.finished[index] = "eos" if choice["finish_reason"] == "stop" else "max_tokens"
                stream.done.add(index)
        return len(stream.done) == len(stream.texts)

    async def _models(self) -> list[str]:
        try:
            return [str(model["id"]) for model in (await self._answer_json("GET", "/v1/models"))["data"]]
        except (KeyError, TypeError):
            raise self._problem("sent a malformed model list") from None


def _parse(data: str | bytes, url: str, native: bool = False) -> dict:
    """One completion chunk (or whole answer), checked for the fields used; ``native``:
    llama.cpp's own format, read as OpenAI's."""
    try:
        chunk = json.loads(data)
        if isinstance(chunk, dict) and "error" in chunk:
            logger.warning("the inference engine at %s reported: %s", url, str(chunk["error"])[:300])
        if native:
            chunk = _from_native(chunk)
        choices = chunk["choices"]
        if isinstance(choices, list) and all(isinstance(c, dict) and isinstance(c.get("text", ""), str)
                                             for c in choices):
            return chunk
    except (ValueError, KeyError, TypeError):
        pass
    raise _malformed(url, repr(str(data)[:300]))


def _from_native(chunk: dict) -> dict:
    """A chunk of llama.cpp's own completion format (``content``, ``stop``, ``stop_type``,
    ``completion_probabilities``) as an OpenAI completion chunk."""
    ended = chunk["stop"] is True
    probabilities = chunk.get("completion_probabilities")
    choice = {"index": 0, "text": chunk["content"], "logprobs": {"content": probabilities},
              "finish_reason": ("length" if chunk.get("stop_type") == "limit" else "stop") if ended else None}
    return {"choices": [choice], "timings": chunk.get("timings")}


def _token_logprobs(logprobs: Any) -> list[float]:
    """The tokens' log-probabilities in a choice's ``logprobs``: OpenAI's completion format
    (``token_logprobs``) or its chat format (``content`` items with a ``logprob``, llama.cpp's
    server); none where the engine sent none or something else."""
    if not isinstance(logprobs, dict):
        return []
    values = logprobs.get("token_logprobs")
    if values is None and isinstance(logprobs.get("content"), list):
        values = [item.get("logprob") for item in logprobs["content"] if isinstance(item, dict)]
    if not isinstance(values, list):
        return []
    return [float(value) for value in values if isinstance(value, (int, float)) and not isinstance(value, bool)]


def _malformed(url: str, detail: str) -> EngineUnavailable:
    logger.warning("the inference engine at %s sent a malformed answer: %s", url, detail)
    return EngineUnavailable(f"the inference engine at {url} sent a malformed response (see the log)")


class EngineScorer:
    """Reward scoring on the engine (a team's GPU server), for ``train score``."""

    def __init__(self, engine: RemoteEngine):
        self.engine = engine

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def facts(self) -> dict:
        return {"generator": self.engine.model_name, "scoring": "engine"}

    def score_all(self, prompts: list[str], target: str, cancel: threading.Event | None = None) -> list[TargetScore]:
        return self.engine.target_scores(prompts, target, cancel or threading.Event())

    def close(self) -> None:
        self.engine.close()


class EngineWithFallback:
    """The engine, and the in-process model while the engine is unavailable (``engine.fallback``).

    An engine found down (not reachable, busy after the retries, too slow) is not asked again
    per request, which would make every completion wait for it: the in-process model answers
    at once while a background probe asks the engine for its model list every
    :data:`PROBE_SECONDS`; the first answer brings the engine back."""

    def __init__(self, engine: RemoteEngine, local: Callable[[], Backend]):
        self.engine = engine
        self._load_local = local
        self._local: Backend | None = None
        self._down: str = ""
        """Why the engine is down (empty while it is up)."""
        self._down_lock = threading.Lock()
        self._closed = threading.Event()
        self.name, self.model_name = engine.name, engine.model_name
        self.token_counting = engine.token_counting

    @property
    def fim(self) -> EngineFim | None:
        return self.engine.fim

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def local(self) -> Backend:
        if self._local is None:
            self._local = self._load_local()
        return self._local

    def generate(self, prompt: str, max_tokens: int, cancel: threading.Event,
                 should_stop: Callable[[str], bool] = lambda _: False, suffix: str = "",
                 heal: bool = False, context: str = "") -> Generation:
        reason = self._down if self.engine.settings.fallback else ""
        if not reason:
            try:
                return self.engine.generate(prompt, max_tokens, cancel, should_stop, suffix, heal, context)
            except EngineUnavailable as error:
                if not self.engine.settings.fallback:
                    raise
                reason = self._went_down(error)
        generation = self.local().generate(prompt, max_tokens, cancel, should_stop, suffix, heal)
        generation.backend, generation.fallback = self.local().name, reason
        return generation

    def drafts(self, prompt: str, k: int, max_tokens: int, cancel: threading.Event,
               should_stop: Callable[[str], bool] = lambda _: False,
               temperature: float = 0.8, top_p: float = 0.95) -> Drafts:
        if not (self._down and self.engine.settings.fallback):
            try:
                return self.engine.drafts(prompt, k, max_tokens, cancel, should_stop, temperature, top_p)
            except EngineUnavailable as error:
                if not self.engine.settings.fallback:
                    raise
                self._went_down(error)
        return self.local().drafts(prompt, k, max_tokens, cancel, should_stop, temperature, top_p)

    def _went_down(self, error: EngineUnavailable) -> str:
        """Note why; an engine that is down (rather than refusing one request) is probed."""
        if isinstance(error, EngineDown):
            with self._down_lock:
                if not self._down:
                    threading.Thread(target=self._probe, name="engine-probe", daemon=True).start()
                self._down = str(error)
        return str(error)

    def _probe(self) -> None:
        while not self._closed.wait(PROBE_SECONDS):
            try:
                self.engine.models(self._closed)
            except (EngineUnavailable, Cancelled):
                continue
            with self._down_lock:
                self._down = ""
            return

    def close(self) -> None:
        self._closed.set()
        self.engine.close()
        if self._local is not None:
            self._local.close()
