"""In-process llama.cpp generation with prompt-prefix reuse and per-step cancellation.

One ``Llama`` object must never be used by two threads at once: callers own the model's
single worker thread. The prompt is evaluated in small chunks and generation proceeds one
token at a time, checking the cancel event between steps, so a cancelled request stops
within one step. Consecutive prompts that share a token prefix reuse its KV cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aligncoder_lsp.models.embedded import ModelUnavailable

logger = logging.getLogger(__name__)

PROMPT_CHUNK = 64
"""Prompt tokens evaluated between two cancellation checks."""


class Cancelled(Exception):
    """The request that asked for this work was cancelled."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    prompt_ms: float
    generate_ms: float
    stopped_by: str


class LlamaModel:
    def __init__(self, path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int = 0):
        from llama_cpp import Llama

        started = time.perf_counter()
        try:
            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=512,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except Exception as error:  # llama.cpp reports bad files as ValueError or OSError
            raise ModelUnavailable(f"llama.cpp could not load {path}: {error}") from error
        self.path = path
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = n_ctx
        self.eos = self.llm.token_eos()
        self.eog = {self.eos}
        logger.info("loaded %s in %.2f s", path, self.load_seconds)

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="ignore")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    def generate(
        self,
        prompt: str,
        max_tokens: int,
        cancel: threading.Event,
        should_stop: Callable[[str], bool] = lambda _: False,
    ) -> Generation:
        """Greedy continuation of ``prompt``; ``should_stop(text)`` ends it early."""
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        room = self.n_ctx - max_tokens - 1
        if len(tokens) > room:
            tokens = tokens[:1] + tokens[len(tokens) - room + 1:]
        started = time.perf_counter()
        reused = self._evaluate_prompt(tokens, cancel)
        prompt_done = time.perf_counter()
        generated: list[int] = []
        text, stopped_by = "", "max_tokens"
        while len(generated) < max_tokens:
            if cancel.is_set():
                raise Cancelled()
            token = self.llm.sample(temp=0.0, repeat_penalty=1.0, top_k=1)
            if token in self.eog:
                stopped_by = "eos"
                break
            generated.append(token)
            text = self.detokenize(generated)
            if should_stop(text):
                stopped_by = "stop"
                break
            self.llm.eval([token])
        return Generation(
            text=text,
            prompt_tokens=len(tokens),
            reused_tokens=reused,
            generated_tokens=len(generated),
            prompt_ms=(prompt_done - started) * 1000,
            generate_ms=(time.perf_counter() - prompt_done) * 1000,
            stopped_by=stopped_by,
        )

    def _evaluate_prompt(self, tokens: list[int], cancel: threading.Event) -> int:
        """Bring the KV cache to ``tokens``, reusing the longest common prefix; returns the
        number of reused tokens."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # the last prompt token is evaluated for fresh logits
        llm.n_tokens = common
        for start in range(common, len(tokens), PROMPT_CHUNK):
            if cancel.is_set():
                raise Cancelled()
            llm.eval(tokens[start:start + PROMPT_CHUNK])
        return common
