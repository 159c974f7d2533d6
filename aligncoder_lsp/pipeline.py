"""One completion request, end to end: retrieve, prompt, generate, post-process.

Knows nothing of LSP. Runs on the model's worker thread (one ``Llama`` per thread) and
checks the request's cancel event between steps; the result carries a trace of what was
used and how long each step took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aligncoder_lsp.config import MODES, Settings
from aligncoder_lsp.index.embeddings import Encoder, TextEncoder, retriever_identity
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable, check_gguf, embedded_generator
from aligncoder_lsp.models.llama_backend import Cancelled, Drafter, Generation, LlamaModel
from aligncoder_lsp.models.prompts import head_within, heal_trailing_space, render_context, tail_within
from aligncoder_lsp.postprocess import Cursor, finish, is_complete
from aligncoder_lsp.retrieval.coarse import coarse_retrieve, query_from_prefix, rank_dependencies
from aligncoder_lsp.retrieval.fine import enhanced_query, fine_rank
from aligncoder_lsp.retrieval.selective import SelectivePolicy, selective_features


logger = logging.getLogger(__name__)


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
        score = f", score {self.score:.2f}" if self.source != "dependency" else ""
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

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    trace: Trace


class CompletionEngine:
    """Owns the models; call :meth:`complete` from one worker thread only.

    Modes: ``none`` (no repository context), ``bm25`` (coarse snippets straight into the
    prompt), ``aligncoder`` (coarse candidates -> k sampled drafts -> enhanced query ->
    dense fine retrieval), ``aligncoder-no-enhance`` (fine retrieval with the unfinished code
    alone) and ``selective`` (a learned policy decides per request whether to retrieve).
    """

    def __init__(self, settings: Settings, index: WorkspaceIndex,
                 encoder_type: Callable[[str, str, int], TextEncoder] = Encoder):
        self.settings = settings
        self.index = index
        self._encoder_type = encoder_type
        self._encoder: TextEncoder | None = None
        self._encoder_settings: tuple[str, str, int] | None = None
        self._encoder_lock = threading.Lock()
        self._generator: LlamaModel | None = None
        self._drafter: Drafter | None = None
        self._policy: SelectivePolicy | None = None

    def generator(self) -> LlamaModel:
        """The loaded generator model (loaded on first use)."""
        if self._generator is None:
            model = self.settings.model
            path = check_gguf(Path(model.generator).expanduser()) if model.generator else \
                embedded_generator(self.settings.resolved_cache_dir())
            self._generator = LlamaModel(path, model.n_ctx, self.settings.threads(), model.n_gpu_layers)
        return self._generator

    def drafter(self) -> Drafter:
        if self._drafter is None or self._drafter.k != self.settings.retrieval.drafts:
            self._drafter = Drafter(self.generator(), self.settings.retrieval.drafts)
        return self._drafter

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
        if self._encoder is not None and hasattr(self._encoder, "close"):
            self._encoder.close()

    def policy(self) -> SelectivePolicy:
        if self._policy is None:
            self._policy = SelectivePolicy.load(self.settings.retrieval.policy)
        return self._policy

    def unload(self) -> None:
        if self._drafter is not None:
            self._drafter.close()
        self._generator = self._drafter = None

    def complete(self, request: CompletionRequest, cancel: threading.Event, mode: str | None = None) -> Completion:
        """Raises :class:`Cancelled` or :class:`ModelUnavailable`."""
        settings = self.settings
        mode = mode or (settings.retrieval.mode if settings.retrieval.enabled else "none")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        job = self._start(request, mode)
        if mode == "selective":
            first = self._generate(job, job.code, cancel)
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
        return self._finish(job, self._generate(job, context + job.code, cancel))

    def attempt(self, request: CompletionRequest, cancel: threading.Event) -> tuple[Completion, Generation]:
        """A completion without repository context, with the raw generation (for the
        selective policy's features)."""
        job = self._start(request, "none")
        generation = self._generate(job, job.code, cancel)
        return self._finish(job, generation), generation

    def _start(self, request: CompletionRequest, mode: str) -> _Job:
        trace = Trace(mode=mode)
        clock = _Clock(trace.timings_ms)
        model = self.generator()
        clock.lap("load")
        trace.model = model.path.name
        prefix, suffix = request.split()
        cursor = Cursor.at(prefix, suffix)
        trace.shape = cursor.mode
        completion = self.settings.completion
        code = tail_within(heal_trailing_space(prefix)[0], completion.prefix_tokens, model.count_tokens)
        after = ""
        if model.fim is not None and completion.suffix_tokens > 0 and suffix.strip():
            after = head_within(suffix[: completion.suffix_tokens * 8], completion.suffix_tokens, model.count_tokens)
            trace.prompt_format = f"fill-in-the-middle ({model.fim.family})"
        clock.lap("prompt")
        return _Job(request, model, prefix, cursor, code, after, trace, clock)

    def _generate(self, job: _Job, prompt: str, cancel: threading.Event) -> Generation:
        max_lines = self.settings.completion.max_lines
        generation = job.model.generate(prompt, self.settings.model.max_tokens, cancel,
                                        should_stop=lambda text: is_complete(text, job.cursor, max_lines),
                                        suffix=job.suffix)
        timings = job.trace.timings_ms
        timings["prompt_eval"] = round(timings.get("prompt_eval", 0) + generation.prompt_ms, 1)
        timings["decode"] = round(timings.get("decode", 0) + generation.generate_ms, 1)
        job.trace.prompt_tokens = generation.prompt_tokens
        job.trace.reused_tokens = generation.reused_tokens
        job.trace.generated_tokens = generation.generated_tokens
        job.trace.stopped_by = generation.stopped_by
        job.clock.lap("generate")
        return generation

    def _finish(self, job: _Job, generation: Generation) -> Completion:
        text = finish(generation.text, job.cursor, self.settings.completion.max_lines)
        job.clock.lap("postprocess")
        job.trace.timings_ms["total"] = job.clock.total()
        return Completion(text, job.trace)

    # -- retrieval -----------------------------------------------------------------------

    def _context(self, job: _Job, mode: str, cancel: threading.Event) -> str:
        """Repository context for the prompt (only text before the cursor is looked at)."""
        settings = self.settings.retrieval
        request, trace, model = job.request, job.trace, job.model
        query = query_from_prefix(job.prefix, settings.query_lines)
        dependencies = rank_dependencies(self.index.dependencies(request.path, job.prefix), query, settings.dependencies)
        coarse = [(s, 0.0, "dependency") for s in dependencies]
        wanted = settings.top_k if mode == "bm25" else settings.candidates
        coarse += [(s, score, "bm25") for s, score in coarse_retrieve(self.index, query, wanted, request.path)]
        job.clock.lap("coarse")
        if mode == "bm25" or not coarse:
            return self._render(coarse, request, model, trace)
        if mode == "aligncoder":
            local = tail_within(job.code, settings.draft_prefix_tokens, model.count_tokens)
            sampler_prompt = self._render(coarse, request, model, None, settings.draft_context_tokens) + local
            max_lines = self.settings.completion.max_lines
            drafts = self.drafter().draft(
                sampler_prompt, settings.draft_tokens, cancel,
                should_stop=lambda text: is_complete(text, job.cursor, max_lines),
                temperature=settings.draft_temperature, top_p=settings.draft_top_p)
            trace.timings_ms["draft_prompt_eval"] = round(drafts.prompt_ms, 1)
            trace.timings_ms["draft_decode"] = round(drafts.generate_ms, 1)
            trace.drafts = [finish(text, job.cursor) for text in drafts.texts]
            job.clock.lap("drafts")
        if cancel.is_set():
            raise Cancelled()
        ranked = fine_rank(self.encoder(), self.index, enhanced_query(query, trace.drafts), [s for s, _, _ in coarse],
                           [score for _, score, _ in coarse], settings.lexical_weight, cancel)
        job.clock.lap("fine")
        kinds = {id(s): kind for s, _, kind in coarse}
        return self._render([(s, score, f"fine:{kinds[id(s)]}") for s, score in ranked], request, model, trace)

    def _render(self, ranked: list[tuple[Snippet, float, str]], request: CompletionRequest,
                model: LlamaModel, trace: Trace | None, budget: int | None = None) -> str:
        """The best snippets that fit the token ``budget`` (default ``context_tokens``),
        rendered as a comment block.

        Dependency signatures take at most a third of the budget (a long one is cut to its
        head), so that code snippets always keep the rest.
        """
        settings = self.settings.retrieval
        budget = settings.context_tokens if budget is None else budget
        chosen: list[tuple[str, str]] = []
        used = dependency_used = 0
        for snippet, score, source in ranked:
            if len(chosen) == settings.top_k + settings.dependencies:
                break
            text = snippet.text
            is_dependency = snippet.kind == "dependency"
            if is_dependency:
                allowed = min(budget // 3 - dependency_used, budget - used) - 8
                text = head_within(text, allowed, model.count_tokens) if allowed > 0 else ""
                if not text.strip():
                    continue
            elif settings.continuation_lines > 0:
                text = "\n".join(filter(None, [text, self.index.continuation(snippet, settings.continuation_lines)]))
            cost = model.count_tokens(text) + 8
            if used + cost > budget:
                continue
            used += cost
            dependency_used += cost if is_dependency else 0
            shown = self.index.relative(snippet.path)
            chosen.append((shown, text))
            if trace is not None:
                trace.snippets.append(SnippetUse(shown, snippet.start + 1, snippet.end, round(score, 3), source))
        # Least relevant first: the best snippet sits closest to the code being completed.
        return render_context(chosen[::-1], request.language)


@dataclass
class _Job:
    """One request on its way through the engine."""

    request: CompletionRequest
    model: LlamaModel
    prefix: str
    cursor: Cursor
    code: str
    """The code before the cursor that fits the prompt."""
    suffix: str
    """The code after the cursor given to a fill-in-the-middle model ('' for left to right)."""
    trace: Trace
    clock: _Clock


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
