"""What the pipeline asks of a generator, and the in-process llama.cpp one that is the default.

The pipeline, the drafts, the selective attempt and post-processing work the same over any
backend; a remote inference engine (:mod:`aligncoder_lsp.models.remote`) is the other one.
Calls come from the model's worker thread only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from aligncoder_lsp.models.llama_backend import Drafter, Drafts, Generation, LlamaModel, TargetScore


class Fim(Protocol):
    """A backend's way of filling in the middle."""

    family: str
    """For the trace: the model family whose FIM tokens are used, or the engine's endpoint."""


class Backend(Protocol):
    """Generation for the pipeline: greedy completions, sampled drafts, token counts for budgets."""

    name: str
    """Which backend answers, for the trace (e.g. ``llama.cpp in-process``)."""
    model_name: str
    """The model it runs, for the trace."""
    token_counting: str
    """How :meth:`count_tokens` counts (the model's tokenizer or an estimate), for the trace."""
    fim: Fim | None
    """How prompts carry the code after the cursor (None: they do not; left to right)."""

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompt: str, max_tokens: int, cancel: threading.Event,
                 should_stop: Callable[[str], bool] = lambda _: False, suffix: str = "",
                 heal: bool = False, context: str = "") -> Generation:
        """Greedy continuation of ``prompt``; ``should_stop(text)`` ends it early; raises
        :class:`~aligncoder_lsp.models.llama_backend.Cancelled` once ``cancel`` is set.
        ``heal``: the prompt ends at the cursor, inside a word the answer may extend (a
        backend that reads the model's vocabulary heals the word's last tokens).
        ``context``: the head of ``prompt`` that is repository context (a
        :class:`~aligncoder_lsp.models.prompts.RenderedContext` names its pieces)."""

    def drafts(self, prompt: str, k: int, max_tokens: int, cancel: threading.Event,
               should_stop: Callable[[str], bool] = lambda _: False,
               temperature: float = 0.8, top_p: float = 0.95) -> Drafts:
        """``k`` sampled continuations of ``prompt``, each ended by ``should_stop``."""

    def close(self) -> None: ...


class Scorer(Protocol):
    """Reward scoring for training: the generator's log-likelihood of a target after prompts."""

    def count_tokens(self, text: str) -> int: ...

    def facts(self) -> dict:
        """What a run's scores depend on (a run is never continued with other facts)."""

    def score_all(self, prompts: list[str], target: str, cancel: threading.Event | None = None) -> list[TargetScore]:
        """``target``'s per-token log-probabilities after each of ``prompts``, in their order."""

    def close(self) -> None: ...


class LocalBackend:
    """The generator in this process through llama.cpp, with its drafter on the same weights."""

    name = "llama.cpp in-process"
    token_counting = "model tokenizer"

    def __init__(self, model: LlamaModel):
        self.model = model
        self.model_name = model.path.name
        self.fim = model.fim
        self._drafter: Drafter | None = None

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def generate(self, prompt: str, max_tokens: int, cancel: threading.Event,
                 should_stop: Callable[[str], bool] = lambda _: False, suffix: str = "",
                 heal: bool = False, context: str = "") -> Generation:
        return self.model.generate(prompt, max_tokens, cancel, should_stop, suffix, heal)

    def drafter(self, k: int) -> Drafter:
        """The drafter of ``k`` sequences (a new one when ``k`` changed)."""
        if self._drafter is None or self._drafter.k != k:
            self.close()
            self._drafter = Drafter(self.model, k)
        return self._drafter

    def drafts(self, prompt: str, k: int, max_tokens: int, cancel: threading.Event,
               should_stop: Callable[[str], bool] = lambda _: False,
               temperature: float = 0.8, top_p: float = 0.95) -> Drafts:
        return self.drafter(k).draft(prompt, max_tokens, cancel, should_stop, temperature, top_p)

    def close(self) -> None:
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None
