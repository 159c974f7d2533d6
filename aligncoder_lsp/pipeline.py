"""One completion request, end to end: retrieve, prompt, generate, post-process.

Knows nothing of LSP. Runs on the model's worker thread (one ``Llama`` per thread) and
checks the request's cancel event between steps; the result carries a trace of what was
used and how long each step took.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable, check_gguf, embedded_generator
from aligncoder_lsp.models.llama_backend import Cancelled, LlamaModel
from aligncoder_lsp.models.prompts import heal_trailing_space, render_context, tail_within
from aligncoder_lsp.postprocess import Cursor, finish, is_complete
from aligncoder_lsp.retrieval.coarse import coarse_retrieve, query_from_prefix, rank_dependencies

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
        score = f", score {self.score:.2f}" if self.source == "base" else ""
        return f"{self.path}:{self.start_line}-{self.end_line} ({self.source}{score})"


@dataclass
class Trace:
    mode: str = "no-retrieval"
    shape: str = "line"
    snippets: list[SnippetUse] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
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
    """Owns the generator model; call :meth:`complete` from one worker thread only."""

    def __init__(self, settings: Settings, index: WorkspaceIndex):
        self.settings = settings
        self.index = index
        self._generator: LlamaModel | None = None

    def generator(self) -> LlamaModel:
        """The loaded generator model (loaded on first use)."""
        if self._generator is None:
            model = self.settings.model
            path = check_gguf(Path(model.generator).expanduser()) if model.generator else \
                embedded_generator(self.settings.resolved_cache_dir())
            self._generator = LlamaModel(path, model.n_ctx, self.settings.threads(), model.n_gpu_layers)
        return self._generator

    def unload(self) -> None:
        self._generator = None

    def complete(self, request: CompletionRequest, cancel: threading.Event) -> Completion:
        """Raises :class:`Cancelled` or :class:`ModelUnavailable`."""
        trace = Trace()
        clock = _Clock(trace.timings_ms)
        model = self.generator()
        clock.lap("load")
        trace.model = model.path.name
        prefix, suffix = request.split()
        cursor = Cursor.at(prefix, suffix)
        trace.shape = cursor.mode

        context = ""
        if self.settings.retrieval.enabled:
            context = self._retrieve(request, prefix, model, trace)
            clock.lap("retrieve")
        if cancel.is_set():
            raise Cancelled()

        stripped, _ = heal_trailing_space(prefix)
        budget = self.settings.completion.prefix_tokens
        prompt = context + tail_within(stripped, budget, model.count_tokens)
        clock.lap("prompt")
        max_lines = self.settings.completion.max_lines
        generation = model.generate(
            prompt,
            self.settings.model.max_tokens,
            cancel,
            should_stop=lambda text: is_complete(text, cursor, max_lines),
        )
        trace.timings_ms["prompt_eval"] = round(generation.prompt_ms, 1)
        trace.timings_ms["decode"] = round(generation.generate_ms, 1)
        clock.lap("generate")
        text = finish(generation.text, cursor, max_lines)
        clock.lap("postprocess")
        trace.prompt_tokens = generation.prompt_tokens
        trace.reused_tokens = generation.reused_tokens
        trace.generated_tokens = generation.generated_tokens
        trace.stopped_by = generation.stopped_by
        trace.timings_ms["total"] = clock.total()
        return Completion(text, trace)

    def _retrieve(self, request: CompletionRequest, prefix: str, model: LlamaModel, trace: Trace) -> str:
        """Coarse context: dependency signatures of the current file and BM25 snippets of
        the others, within the token budget (only text before the cursor is looked at)."""
        settings = self.settings.retrieval
        query = query_from_prefix(prefix, settings.query_lines)
        dependencies = rank_dependencies(self.index.dependencies(request.path, prefix), query, settings.dependencies)
        candidates = [(snippet, 0.0) for snippet in dependencies]
        candidates += coarse_retrieve(self.index, query, settings.top_k, request.path)
        chosen: list[tuple[str, str]] = []
        used = 0
        for snippet, score in candidates:
            shown = self.index.relative(snippet.path)
            cost = model.count_tokens(snippet.text) + 8
            if used + cost > settings.context_tokens:
                continue
            used += cost
            chosen.append((shown, snippet.text))
            trace.snippets.append(SnippetUse(shown, snippet.start + 1, snippet.end, round(score, 3), snippet.kind))
        trace.mode = "retrieval" if chosen else "no-retrieval"
        # Least relevant first: the best snippet sits closest to the code being completed.
        return render_context(chosen[::-1], request.language)


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
