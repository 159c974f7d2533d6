"""One completion request, end to end: retrieve, prompt, generate, post-process.

Knows nothing of LSP. Runs on the model's worker thread (one ``Llama`` per thread) and
checks the request's cancel event between steps; the result carries a trace of what was
used and how long each step took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aligncoder_lsp.config import MODES, Settings
from aligncoder_lsp.index.embeddings import Encoder, TextEncoder, retriever_identity
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.backend import Backend, LocalBackend, Scorer
from aligncoder_lsp.models.embedded import ModelUnavailable, check_gguf, embedded_generator
from aligncoder_lsp.models.llama_backend import Cancelled, Drafter, Generation, LlamaModel, TargetScorer
from aligncoder_lsp.models.prompts import ContextPiece, code_window, fit_context, head_within, render_context, \
    tail_within
from aligncoder_lsp.postprocess import Cursor, finish, is_complete
from aligncoder_lsp.retrieval.coarse import coarse_candidates
from aligncoder_lsp.retrieval.file_context import file_context
from aligncoder_lsp.retrieval.fine import enhanced_query, fine_rank
from aligncoder_lsp.retrieval.selective import SelectivePolicy, selective_features

if TYPE_CHECKING:
    from aligncoder_lsp.models.remote import RemoteEngine

logger = logging.getLogger(__name__)

KEPT_CONTEXTS = 32
"""Files whose last context block is kept (the least recently completed are dropped)."""


@dataclass(frozen=True)
class CompletionRequest:
    """A snapshot of the document at request time; ``line``/``column`` in code points."""

    path: str
    text: str
    line: int
    column: int
    language: str = "python"

    def offset(self) -> int:
        lines = self.text.split("\n")
        line = min(max(self.line, 0), len(lines) - 1)
        column = min(max(self.column, 0), len(lines[line]))
        return sum(len(item) + 1 for item in lines[:line]) + column

    def split(self) -> tuple[str, str]:
        offset = self.offset()
        return self.text[:offset], self.text[offset:]


@dataclass
class SnippetUse:
    path: str
    start_line: int
    end_line: int
    score: float
    source: str

    def describe(self) -> str:
        score = f", score {self.score:.2f}" if self.source not in ("dependency", "file") else ""
        return f"{self.path}:{self.start_line}-{self.end_line} ({self.source}{score})"


@dataclass
class Trace:
    mode: str = "none"
    retrieved: bool = False
    retrieve_probability: float | None = None
    shape: str = "line"
    snippets: list[SnippetUse] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_format: str = "left-to-right"
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    stopped_by: str = ""
    model: str = ""
    backend: str = ""
    """Which backend generated (in-process llama.cpp or an engine's URL)."""
    token_counting: str = ""
    """How prompt budgets counted tokens: the model's tokenizer or an estimate."""
    fallback: str = ""
    """Why the configured backend did not answer, when the in-process model did instead."""
    typed_ahead: int = 0
    """Characters of a shown suggestion the user typed; the rest was answered without the model."""
    kept_context: bool = False
    """The context block of the previous request in this file was kept (still relevant)."""
    file_context: list[SnippetUse] = field(default_factory=list)
    """Definitions of the current file before the code window whose signatures head the code."""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    trace: Trace


def load_generator(settings: Settings) -> LlamaModel:
    """The configured generator (the embedded Gemma-3-270M unless a GGUF is given)."""
    model = settings.model
    return LlamaModel(local_generator_path(settings), model.n_ctx, model.n_threads, model.n_gpu_layers)


def load_backend(settings: Settings) -> Backend:
    """The configured backend: the in-process model, or the inference engine at ``engine.url``
    (with the in-process model as its fallback, loaded when first needed)."""
    if not settings.engine.url:
        return LocalBackend(load_generator(settings))
    from aligncoder_lsp.models.remote import EngineWithFallback

    return EngineWithFallback(connect_engine(settings), lambda: LocalBackend(load_generator(settings)))


def load_scorer(settings: Settings) -> Scorer:
    """Reward scoring on the configured backend: the in-process model, or the engine at
    ``engine.url`` (no fallback: one run's rewards come from one generator)."""
    if not settings.engine.url:
        return TargetScorer(load_generator(settings))
    from aligncoder_lsp.models.remote import EngineScorer

    return EngineScorer(connect_engine(settings))


def connect_engine(settings: Settings) -> RemoteEngine:
    """The engine at ``engine.url``, asked what it is (llama.cpp's server, FIM), counting
    prompt tokens with the local generator's tokenizer when the engine serves the same model."""
    from aligncoder_lsp.models.remote import RemoteEngine

    engine = RemoteEngine(settings.engine)
    engine.detect()
    try:
        engine.adopt_tokenizer(local_generator_path(settings))
    except ModelUnavailable as error:
        logger.info("no local tokenizer for prompt budgets (%s): they use the token estimate", error)
    return engine


def local_generator_path(settings: Settings) -> Path:
    """The GGUF file of the in-process generator (the embedded one unless ``model.generator``)."""
    generator = settings.model.generator
    return check_gguf(Path(generator).expanduser()) if generator else embedded_generator(settings.resolved_cache_dir())


class CompletionEngine:
    """Owns the models; call :meth:`complete` from one worker thread only.

    Modes: ``none`` (no repository context), ``bm25`` (coarse snippets straight into the
    prompt), ``aligncoder`` (coarse candidates -> k sampled drafts -> enhanced query ->
    dense fine retrieval), ``aligncoder-no-enhance`` (fine retrieval with the unfinished code
    alone) and ``selective`` (a learned policy decides per request whether to retrieve).
    """

    def __init__(self, settings: Settings, index: WorkspaceIndex,
                 encoder_type: Callable[[str, str, int], TextEncoder] = Encoder, keep_context: bool = False):
        """``keep_context``: while the snippets of a file's last context block stay among the
        coarse candidates of the next request there, the block is kept as it was (same
        snippets, same order), so the prompt's head and its KV cache stay valid and no drafts
        or fine retrieval are redone. For an editor, where requests follow the typing; not for
        independent requests such as benchmark tasks."""
        self.settings = settings
        self.keep_context = keep_context
        self._kept: OrderedDict[str, _KeptContext] = OrderedDict()
        self.index = index
        self._encoder_type = encoder_type
        self._encoder: TextEncoder | None = None
        self._encoder_settings: tuple[str, str, int] | None = None
        self._encoder_lock = threading.Lock()
        self._generator: Backend | None = None
        self._policy: SelectivePolicy | None = None

    def generator(self) -> Backend:
        """The generation backend (loaded on first use)."""
        if self._generator is None:
            self._generator = load_backend(self.settings)
        return self._generator

    def drafter(self) -> Drafter:
        """The in-process drafter (training reseeds it per hole)."""
        backend = self.generator()
        if not isinstance(backend, LocalBackend):
            raise ModelUnavailable("seeded drafts need the in-process model; unset engine.url")
        return backend.drafter(self.settings.retrieval.drafts)

    def encoder(self) -> TextEncoder:
        """The retriever of the current settings; a new one (and its own vectors in the
        index) when the settings changed."""
        retriever = self.settings.retriever
        wanted = (retriever.model, retriever.precision, retriever.max_tokens)
        with self._encoder_lock:
            if self._encoder is None or self._encoder_settings != wanted:
                self.close_encoder()
                self._encoder = self._encoder_type(*wanted)
                self._encoder_settings = wanted
                self.index.use_retriever(retriever_identity(*wanted))
            return self._encoder

    def close_encoder(self) -> None:
        """Release the retriever (the next use loads it again, e.g. after a settings change)."""
        if self._encoder is not None and hasattr(self._encoder, "close"):
            self._encoder.close()
        self._encoder = None

    def policy(self) -> SelectivePolicy:
        if self._policy is None:
            self._policy = SelectivePolicy.load(self.settings.retrieval.policy)
        return self._policy

    def unload(self) -> None:
        if self._generator is not None:
            self._generator.close()
        self._generator = None

    def complete(self, request: CompletionRequest, cancel: threading.Event, mode: str | None = None) -> Completion:
        """Raises :class:`Cancelled` or :class:`ModelUnavailable`."""
        settings = self.settings
        mode = mode or (settings.retrieval.mode if settings.retrieval.enabled else "none")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        job = self._start(request, mode)
        if mode == "selective":
            first = self._generate(job, "", cancel)
            policy = self.policy()
            probability = policy.probability(selective_features(first, job.prefix, job.request.path, self.index))
            job.trace.retrieve_probability = round(probability, 3)
            job.clock.lap("policy")
            threshold = settings.retrieval.threshold if settings.retrieval.threshold >= 0 else policy.threshold
            if probability < threshold:
                return self._finish(job, first)
            mode = "aligncoder"
        context = ""
        if mode != "none":
            context = self._context(job, mode, cancel)
            job.trace.retrieved = bool(job.trace.snippets)
        if cancel.is_set():
            raise Cancelled()
        return self._finish(job, self._generate(job, context, cancel))

    def attempt(self, request: CompletionRequest, cancel: threading.Event) -> tuple[Completion, Generation]:
        """A completion without repository context, with the raw generation (for the
        selective policy's features)."""
        job = self._start(request, "none")
        generation = self._generate(job, "", cancel)
        return self._finish(job, generation), generation

    def _start(self, request: CompletionRequest, mode: str) -> _Job:
        trace = Trace(mode=mode)
        clock = _Clock(trace.timings_ms)
        model = self.generator()
        clock.lap("load")
        trace.model, trace.backend, trace.token_counting = model.model_name, model.name, model.token_counting
        prefix, suffix = request.split()
        cursor = Cursor.at(prefix, suffix, request.language)
        trace.shape = cursor.mode
        completion = self.settings.completion
        code, spaces = code_window(prefix, completion.prefix_tokens, model.count_tokens)
        earlier = file_context(prefix[: len(prefix) - len(spaces) - len(code)], request.language,
                               completion.file_context_tokens, model.count_tokens)
        trace.file_context = [SnippetUse(request.path, d.start + 1, d.end, 0.0, "file") for d in earlier.definitions]
        after = ""
        if model.fim is not None and completion.suffix_tokens > 0 and suffix.strip():
            after = head_within(suffix[: completion.suffix_tokens * 8], completion.suffix_tokens, model.count_tokens)
            trace.prompt_format = f"fill-in-the-middle ({model.fim.family})"
        clock.lap("prompt")
        return _Job(request, model, prefix, cursor, earlier.block + code, after, trace, clock)

    def _generate(self, job: _Job, context: str, cancel: threading.Event) -> Generation:
        """The answer to the prompt ``context`` (repository context, possibly none) + the code."""
        max_lines = self.settings.completion.max_lines
        generation = job.model.generate(context + job.code, self.settings.model.max_tokens, cancel,
                                        should_stop=lambda text: is_complete(text, job.cursor, max_lines),
                                        suffix=job.suffix, heal=job.cursor.in_word, context=context)
        timings = job.trace.timings_ms
        timings["prompt_eval"] = round(timings.get("prompt_eval", 0) + generation.prompt_ms, 1)
        timings["decode"] = round(timings.get("decode", 0) + generation.generate_ms, 1)
        job.trace.prompt_tokens = generation.prompt_tokens
        job.trace.reused_tokens = generation.reused_tokens
        job.trace.generated_tokens = generation.generated_tokens
        job.trace.stopped_by = generation.stopped_by
        if generation.backend:
            job.trace.backend, job.trace.fallback = generation.backend, generation.fallback
        job.clock.lap("generate")
        return generation

    def _finish(self, job: _Job, generation: Generation) -> Completion:
        text = finish(generation.text, job.cursor, self.settings.completion.max_lines,
                      truncated=generation.stopped_by == "max_tokens")
        job.clock.lap("postprocess")
        job.trace.timings_ms["total"] = job.clock.total()
        return Completion(text, job.trace)

    # -- retrieval -----------------------------------------------------------------------

    def _context(self, job: _Job, mode: str, cancel: threading.Event) -> str:
        """Repository context for the prompt (only text before the cursor is looked at)."""
        settings = self.settings.retrieval
        request, trace = job.request, job.trace
        wanted = settings.top_k if mode == "bm25" and not self.keep_context else settings.candidates
        query, coarse = coarse_candidates(self.index, request.path, job.prefix, settings, wanted)
        job.clock.lap("coarse")
        if self.keep_context:
            key = (mode, repr(self.settings.retrieval), repr(self.settings.retriever))
            kept = self._kept.get(request.path)
            if kept is not None and kept.key == key and kept.snippets <= {_identity(s) for s, _, _ in coarse}:
                trace.snippets.extend(kept.uses)
                trace.drafts = list(kept.drafts)
                trace.kept_context = True
                return kept.block
            block = self._fresh_context(job, mode, query, coarse, cancel)
            self._kept[request.path] = _KeptContext(key, block, list(trace.snippets), list(trace.drafts),
                                                    frozenset(job.shown))
            self._kept.move_to_end(request.path)
            while len(self._kept) > KEPT_CONTEXTS:
                self._kept.popitem(last=False)
            return block
        return self._fresh_context(job, mode, query, coarse, cancel)

    def _fresh_context(self, job: _Job, mode: str, query: str, coarse: list[tuple[Snippet, float, str]],
                       cancel: threading.Event) -> str:
        settings = self.settings.retrieval
        request, trace = job.request, job.trace
        if mode == "bm25" or not coarse:
            if mode == "bm25":  # the top-k of the candidates fetched to check a kept block
                coarse = [item for item in coarse if item[2] == "dependency"] + \
                    [item for item in coarse if item[2] != "dependency"][:settings.top_k]
            return self.context_block(coarse, request.language, trace, shown=job.shown)
        if mode == "aligncoder":
            trace.drafts = self._drafts(job, coarse, cancel)
            job.clock.lap("drafts")
        if cancel.is_set():
            raise Cancelled()
        ranked = fine_rank(self.encoder(), self.index, enhanced_query(query, trace.drafts), [s for s, _, _ in coarse],
                           [score for _, score, _ in coarse], settings.lexical_weight, cancel)
        job.clock.lap("fine")
        kinds = {id(s): kind for s, _, kind in coarse}
        return self.context_block([(s, score, f"fine:{kinds[id(s)]}") for s, score in ranked], request.language, trace,
                                  shown=job.shown)

    def _drafts(self, job: _Job, coarse: list[tuple[Snippet, float, str]], cancel: threading.Event) -> list[str]:
        """The sampler's drafts of the completion, given the coarse context and the local code."""
        settings = self.settings.retrieval
        local = tail_within(job.code, settings.draft_prefix_tokens, job.model.count_tokens)
        sampler_prompt = self.context_block(coarse, job.request.language, budget=settings.draft_context_tokens) + local
        max_lines = self.settings.completion.max_lines
        drafts = job.model.drafts(
            sampler_prompt, settings.drafts, settings.draft_tokens, cancel,
            should_stop=lambda text: is_complete(text, job.cursor, max_lines),
            temperature=settings.draft_temperature, top_p=settings.draft_top_p)
        job.trace.timings_ms["draft_prompt_eval"] = round(drafts.prompt_ms, 1)
        job.trace.timings_ms["draft_decode"] = round(drafts.generate_ms, 1)
        return [finish(text, job.cursor) for text in drafts.texts]

    def rerank_inputs(self, request: CompletionRequest, cancel: threading.Event) -> RerankInputs:
        """What fine retrieval re-ranks for ``request`` in ``aligncoder`` mode: the query,
        the coarse candidates and the sampler's drafts, selected exactly as serving does
        (training labels these)."""
        job = self._start(request, "aligncoder")
        query, coarse = coarse_candidates(self.index, request.path, job.prefix, self.settings.retrieval,
                                          self.settings.retrieval.candidates)
        drafts = self._drafts(job, coarse, cancel) if coarse else []
        return RerankInputs(query, coarse, drafts)

    def context_pieces(self, ranked: list[tuple[Snippet, float, str]]):
        """The snippets as the prompt shows them: code with the lines that follow it in its
        file, signatures as they are (read lazily, as budgeting needs them)."""
        lines = self.settings.retrieval.continuation_lines
        for snippet, _, _ in ranked:
            text = snippet.text
            is_dependency = snippet.kind == "dependency"
            if not is_dependency and lines > 0:
                text = "\n".join(filter(None, [text, self.index.continuation(snippet, lines)]))
            yield ContextPiece(self.index.relative(snippet.path), text, is_dependency)

    def context_block(self, ranked: list[tuple[Snippet, float, str]], language: str, trace: Trace | None = None,
                      budget: int | None = None, shown: set | None = None) -> str:
        """The best snippets that fit the token ``budget`` (default ``context_tokens``),
        rendered as the comment block that heads the prompt; what is shown goes to ``trace``
        (and the snippets' identities to ``shown``)."""
        settings = self.settings.retrieval
        budget = settings.context_tokens if budget is None else budget
        chosen = fit_context(self.context_pieces(ranked), budget, settings.top_k + settings.dependencies,
                             self.generator().count_tokens)
        if trace is not None:
            for position, piece in chosen:
                snippet, score, source = ranked[position]
                trace.snippets.append(SnippetUse(piece.path, snippet.start + 1, snippet.end, round(score, 3), source))
        if shown is not None:
            shown.update(_identity(ranked[position][0]) for position, _ in chosen)
        # Least relevant first: the best snippet sits closest to the code being completed.
        return render_context([(piece.path, piece.text) for _, piece in chosen[::-1]], language)


@dataclass(frozen=True)
class RerankInputs:
    query: str
    candidates: list[tuple[Snippet, float, str]]
    """(snippet, coarse score, source) with source ``dependency`` or ``bm25``."""
    drafts: list[str]

    def enhanced_query(self) -> str:
        return enhanced_query(self.query, self.drafts)


@dataclass
class _Job:
    """One request on its way through the engine."""

    request: CompletionRequest
    model: Backend
    prefix: str
    cursor: Cursor
    code: str
    """The code before the cursor that fits the prompt, headed by the file's earlier definitions."""
    suffix: str
    """The code after the cursor given to a fill-in-the-middle model ('' for left to right)."""
    trace: Trace
    clock: _Clock
    shown: set = field(default_factory=set)
    """Identities of the snippets in the context block."""


@dataclass(frozen=True)
class _KeptContext:
    key: tuple
    """The mode and the settings the block was made with."""
    block: str
    uses: list[SnippetUse]
    drafts: list[str]
    snippets: frozenset


def _identity(snippet: Snippet) -> tuple:
    """A snippet as it is now: an edit of its file gives it another identity."""
    return snippet.path, snippet.start, snippet.end, hash(snippet.text)


class _Clock:
    def __init__(self, laps: dict[str, float]):
        self.laps = laps
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self._last) * 1000, 1)
        self._last = now

    def total(self) -> float:
        return round((time.perf_counter() - self._start) * 1000, 1)


__all__ = ["Cancelled", "Completion", "CompletionEngine", "CompletionRequest", "ModelUnavailable", "Trace"]
