"""In-process llama.cpp generation with prompt-prefix reuse and per-step cancellation.

One ``Llama`` object must never be used by two threads at once: callers own the model's
single worker thread. The prompt is evaluated in small chunks and generation proceeds one
token at a time, checking the cancel event between steps, so a cancelled request stops
within one step. Consecutive prompts that share a token prefix reuse its KV cache.

Models whose vocabulary has fill-in-the-middle tokens (llama.cpp reads them from the GGUF)
get the code after the cursor too, laid out prefix-suffix-middle with the family's tokens.

A prompt that ends inside a word ends inside a token the model rarely saw split there, so
the word is seldom extended. Token healing takes the word's last tokens back and lets the
output start only with tokens that agree with their text.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aligncoder_lsp.models.cores import CoreMeter, usable_cores
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.models.llama_logs import route_llama_logs

logger = logging.getLogger(__name__)

PROMPT_CHUNK = 64
"""Prompt tokens evaluated between two cancellation checks."""

HEAL_TOKENS = 2
"""Prompt tokens at most that token healing takes back."""


def _fit(tokens: list[int], room: int) -> list[int]:
    """The prompt cut to ``room`` tokens: BOS kept, the oldest code dropped."""
    return tokens if len(tokens) <= room else tokens[:1] + tokens[len(tokens) - room + 1:]


def _reusable_prefix(cached, tokens: list[int]) -> int:
    """Tokens of ``tokens`` already in the KV cache; the last prompt token is always
    evaluated again, for fresh logits."""
    common = 0
    for a, b in zip(cached, tokens):
        if a != b:
            break
        common += 1
    return min(common, len(tokens) - 1)


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle token ids of a model and the family they identify."""

    family: str
    prefix: int
    suffix: int
    middle: int


FIM_FAMILIES = {"<|fim_prefix|>": "qwen-coder", "<fim_prefix>": "starcoder", "<fim-prefix>": "starcoder",
                "<｜fim▁begin｜>": "deepseek-coder", "<PRE>": "codellama", "▁<PRE>": "codellama"}
"""The text of a model's FIM-prefix token -> its family (CodeGemma shares Qwen's, see below)."""


def fim_family(prefix_text: str, has_file_separator: bool) -> str:
    """The model family named by its FIM-prefix token text; CodeGemma spells it like
    Qwen-Coder but separates files with ``<|file_separator|>``."""
    family = FIM_FAMILIES.get(prefix_text.strip(), "other")
    return "codegemma" if family == "qwen-coder" and has_file_separator else family


def fim_prompt(bos: list[int], before: list[int], after: list[int], fim: FimTokens, room: int) -> list[int]:
    """``before`` and ``after`` the cursor in prefix-suffix-middle order within ``room``
    tokens: the suffix keeps its head (at most half the room), the prefix its tail."""
    after = after[: max(0, (room - len(bos) - 3) // 2)]
    keep = max(0, room - len(bos) - len(after) - 3)
    before = before[len(before) - keep:] if keep else []
    return bos + [fim.prefix] + before + [fim.suffix] + after + [fim.middle]


class TokenTexts:
    """The text of every vocabulary token, with an order sorted by text for prefix look-ups
    (a vocabulary has up to a few hundred thousand tokens)."""

    def __init__(self, pieces: list[bytes]):
        self._texts = np.array(pieces, dtype="S")
        self._order = np.argsort(self._texts, kind="stable")

    def text(self, token: int) -> bytes:
        return bytes(self._texts[token])

    def starting(self, text: bytes) -> np.ndarray:
        """Ids of the tokens whose text starts with ``text`` or is a non-empty head of it."""
        ranges = [(self._search(text, "left"), self._search(_successor(text), "left"))]
        ranges += [(self._search(text[:end], "left"), self._search(text[:end], "right")) for end in range(1, len(text))]
        return np.concatenate([self._order[low:high] for low, high in ranges])

    def _search(self, text: bytes | None, side: str) -> int:
        return len(self._texts) if text is None else int(np.searchsorted(self._texts, text, side, self._order))


def _successor(text: bytes) -> bytes | None:
    """The least text above every text that starts with ``text`` (None: there is none)."""
    head = text.rstrip(b"\xff")
    return head[:-1] + bytes([head[-1] + 1]) if head else None


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
    logprobs: list[float]
    """Log-probability of each generated token (the model's confidence)."""
    backend: str = ""
    """Which backend generated, when it is not the one asked (a fallback)."""
    fallback: str = ""
    """Why the backend asked could not generate, when another one did."""


def gguf_token_counter(path: Path) -> Callable[[str], int]:
    """Token counts by a GGUF file's tokenizer alone (the weights are not loaded)."""
    import llama_cpp

    try:
        vocabulary = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except Exception as error:  # llama.cpp reports bad files as ValueError or OSError
        raise ModelUnavailable(f"llama.cpp could not read the tokenizer of {path}: {error}") from error
    return lambda text: len(vocabulary.tokenize(text.encode("utf-8"), add_bos=False, special=False))


class LlamaModel:
    def __init__(self, path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int = 0):
        """``n_threads`` 0: as many as other processes leave cores free, at every prompt."""
        import llama_cpp

        route_llama_logs()
        started = time.perf_counter()
        self.meter = CoreMeter() if n_threads == 0 else None
        self.threads = n_threads or usable_cores()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=512,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except Exception as error:  # llama.cpp reports bad files as ValueError or OSError
            raise ModelUnavailable(f"llama.cpp could not load {path}: {error}") from error
        self.path = path
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = n_ctx
        self.eos = self.llm.token_eos()
        self.vocabulary = self.llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._token_texts: TokenTexts | None = None
        self.fim = self._detect_fim()
        logger.info("loaded %s in %.2f s (%s)", path, self.load_seconds,
                    f"fill-in-the-middle: {self.fim.family}" if self.fim else "left-to-right")

    def _detect_fim(self) -> FimTokens | None:
        import llama_cpp

        ids = [llama_cpp.llama_vocab_fim_pre(self._vocab), llama_cpp.llama_vocab_fim_suf(self._vocab),
               llama_cpp.llama_vocab_fim_mid(self._vocab)]
        if min(ids) < 0:
            return None
        text = llama_cpp.llama_vocab_get_text(self._vocab, ids[0]).decode("utf-8", errors="replace")
        separator = self.llm.tokenize(b"<|file_separator|>", add_bos=False, special=True)
        return FimTokens(fim_family(text, len(separator) == 1), *ids)

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, end of turn, FIM file separators...)."""
        import llama_cpp

        return token == self.eos or bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def prompt_tokens(self, prompt: str, room: int, suffix: str = "") -> list[int]:
        """Token ids of ``prompt`` (the code before the cursor last) within ``room`` tokens;
        with a FIM model and a non-empty ``suffix``, laid out prefix-suffix-middle."""
        return self._healed_prompt(prompt, room, suffix, heal=False)[0]

    def _healed_prompt(self, prompt: str, room: int, suffix: str, heal: bool) -> tuple[list[int], bytes]:
        """:meth:`prompt_tokens`, less the last tokens of a word the prompt ends in when
        ``heal``; with the text of the tokens taken back."""
        if not suffix or self.fim is None:
            tokens, taken = self._take_back(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False),
                                            prompt, heal)
            return _fit(tokens, room), taken
        bos = self.llm.tokenize(b"", add_bos=True, special=False)
        before, taken = self._take_back(self.tokenize(prompt), prompt, heal)
        return fim_prompt(bos, before, self.tokenize(suffix), self.fim, room), taken

    def _take_back(self, tokens: list[int], prompt: str, heal: bool) -> tuple[list[int], bytes]:
        """``tokens`` without those (at most :data:`HEAL_TOKENS`) that cover the word
        ``prompt`` ends in, and their text."""
        word = re.search(r"\w+$", prompt) if heal else None
        if word is None:
            return tokens, b""
        size = len(word.group().encode("utf-8"))
        keep = len(tokens)
        while keep > 1 and len(tokens) - keep < HEAL_TOKENS and len(self.llm.detokenize(tokens[keep:])) < size:
            keep -= 1
        return tokens[:keep], self.llm.detokenize(tokens[keep:])

    def token_texts(self) -> TokenTexts:
        """The vocabulary's token texts, read once (about a second for 262k tokens)."""
        if self._token_texts is None:
            import llama_cpp

            started = time.perf_counter()
            buffer = ctypes.create_string_buffer(256)
            to_piece = llama_cpp.llama_token_to_piece
            self._token_texts = TokenTexts([buffer[:max(0, to_piece(self._vocab, token, buffer, 256, 0, False))]
                                            for token in range(self.vocabulary)])
            logger.info("read the texts of %d tokens in %.2f s", self.vocabulary, time.perf_counter() - started)
        return self._token_texts

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
        suffix: str = "",
        heal: bool = False,
    ) -> Generation:
        """Greedy continuation of ``prompt`` (filling in before ``suffix`` on a FIM model);
        ``should_stop(text)`` ends it early. ``heal``: the prompt ends where the cursor is, so
        a word it ends in is healed (the text returned still starts at the prompt's end)."""
        tokens, taken = self._healed_prompt(prompt, self.n_ctx - max_tokens - 1, suffix, heal)
        started = time.perf_counter()
        reused = self._evaluate_prompt(tokens, cancel)
        prompt_done = time.perf_counter()
        generated: list[int] = []
        logprobs: list[float] = []
        text, stopped_by, pending, healing = "", "max_tokens", taken, 0
        while len(generated) - healing < max_tokens:
            if cancel.is_set():
                raise Cancelled()
            logits = self._last_logits()
            if pending:  # the token must agree with the text taken back
                allowed = self.token_texts().starting(pending)
                token = int(allowed[logits[allowed].argmax()])
                pending = pending[len(self.token_texts().text(token)):]
                healing += 1
            else:
                token = int(logits.argmax())
            if self.is_end(token):
                stopped_by = "eos"
                break
            top = float(logits[token])
            logprobs.append(-float(np.log(np.exp(logits - top, dtype=np.float64).sum())))
            generated.append(token)
            text = self.llm.detokenize(generated)[len(taken):].decode("utf-8", errors="ignore")
            if not pending and should_stop(text):
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
            logprobs=logprobs,
        )

    def _last_logits(self) -> np.ndarray:
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.vocabulary,))

    def fit_threads(self, context) -> None:
        """Give llama.cpp ``context`` the free cores (with ``n_threads`` 0; a fixed count stays)."""
        import llama_cpp

        if self.meter is not None:
            self.threads = self.meter.threads()
        llama_cpp.llama_set_n_threads(context, self.threads, self.threads)

    def _evaluate_prompt(self, tokens: list[int], cancel: threading.Event) -> int:
        """Bring the KV cache to ``tokens``, reusing the longest common prefix; returns the
        number of reused tokens."""
        llm = self.llm
        self.fit_threads(llm.ctx)
        common = _reusable_prefix(llm.input_ids[: llm.n_tokens], tokens)
        llm.n_tokens = common
        for start in range(common, len(tokens), PROMPT_CHUNK):
            if cancel.is_set():
                raise Cancelled()
            llm.eval(tokens[start:start + PROMPT_CHUNK])
        return common


@dataclass
class Drafts:
    texts: list[str]
    prompt_tokens: int
    reused_tokens: int
    prompt_ms: float
    generate_ms: float


class LlamaContext:
    """A low-level llama.cpp context on a loaded model's weights: batched decoding with
    per-token logits flags, sequence operations, and reuse of the cached token prefix of
    sequence 0. Owns its KV cache, so the generator's cached prompt is left alone. Use from
    the model's worker thread only."""

    def __init__(self, model: LlamaModel, sequences: int = 1, batch_tokens: int = PROMPT_CHUNK):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.model = model
        self.batch_tokens = max(batch_tokens, sequences)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = model.n_ctx
        params.n_batch = params.n_ubatch = max(512, self.batch_tokens)
        params.n_seq_max = sequences
        params.kv_unified = True  # sequences share the prompt's cells
        params.n_threads = params.n_threads_batch = model.threads
        self._ctx = llama_cpp.llama_init_from_model(model.llm._model.model, params)
        if self._ctx is None:
            raise ModelUnavailable("llama.cpp could not create a context")
        self.memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, sequences)
        self.cached: list[int] = []
        """Tokens of sequence 0 in the KV cache."""

    def close(self) -> None:
        if self._ctx is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def __del__(self):
        self.close()

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) items as one batch."""
        batch = self._batch
        batch.n_tokens = len(items)
        for i, (token, position, sequence, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence
            batch.logits[i] = logits
        if self._llama_cpp.llama_decode(self._ctx, batch) != 0:
            raise RuntimeError("llama.cpp failed to decode a batch")

    def logits(self, index: int) -> np.ndarray:
        """Logits at item ``index`` of the last batch (flagged for logits; -1: the last flagged one)."""
        return np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self._ctx, index),
                                     shape=(self.model.vocabulary,))

    def evaluate(self, tokens: list[int], cancel: threading.Event, logits_from: int | None = None,
                 on_logits: Callable[[int, np.ndarray], None] = lambda position, logits: None) -> int:
        """Bring sequence 0 to ``tokens``, reusing the longest cached prefix; positions from
        ``logits_from`` on (default: the last one) get logits, handed to ``on_logits`` as
        they are decoded. Returns the number of reused tokens."""
        logits_from = len(tokens) - 1 if logits_from is None else logits_from
        self.model.fit_threads(self._ctx)
        common = min(_reusable_prefix(self.cached, tokens), logits_from)
        self._llama_cpp.llama_memory_seq_rm(self.memory, -1, common, -1)
        self.cached = tokens[:common]
        for start in range(common, len(tokens), self.batch_tokens):
            if cancel.is_set():
                raise Cancelled()
            chunk = tokens[start:start + self.batch_tokens]
            self.decode([(token, start + i, 0, start + i >= logits_from) for i, token in enumerate(chunk)])
            self.cached = tokens[: start + len(chunk)]
            for i in range(max(0, logits_from - start), len(chunk)):
                on_logits(start + i, self.logits(i))
        return common


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log P(``token``) under ``logits``."""
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top, dtype=np.float64).sum()))


@dataclass
class TargetScore:
    logprobs: list[float]
    """log P of each target token given the prompt and the target tokens before it."""
    prompt_tokens: int
    reused_tokens: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.logprobs)) if self.logprobs else 0.0


class TargetScorer:
    """Log-likelihood of a target continuation after a prompt, with logits computed only
    at the positions that predict target tokens (never for the whole prompt)."""

    BATCH_TOKENS = 512

    def __init__(self, model: LlamaModel):
        self.model = model
        self._context = LlamaContext(model, 1, self.BATCH_TOKENS)

    def close(self) -> None:
        self._context.close()

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def facts(self) -> dict:
        return {"generator": self.model.path.name, "n_ctx": self.model.n_ctx}

    def score_all(self, prompts: list[str], target: str, cancel: threading.Event | None = None) -> list[TargetScore]:
        """One after the other (prompts in sorted order share their KV prefix)."""
        return [self.score(prompt, target, cancel) for prompt in prompts]

    def score(self, prompt: str, target: str, cancel: threading.Event | None = None) -> TargetScore:
        """``prompt`` is tokenized as the generator tokenizes a prompt (BOS first, the oldest
        code dropped when too long) and ``target`` on its own, as generation would produce it."""
        target_tokens = self.model.tokenize(target)
        prompt_tokens = self.model.prompt_tokens(prompt, self.model.n_ctx - len(target_tokens) - 1)
        tokens = prompt_tokens + target_tokens
        logprobs: list[float] = [0.0] * len(target_tokens)

        def collect(position: int, logits: np.ndarray) -> None:
            offset = position - len(prompt_tokens) + 1
            if 0 <= offset < len(target_tokens):
                logprobs[offset] = log_softmax_at(logits, target_tokens[offset])

        reused = self._context.evaluate(tokens[:-1] if target_tokens else tokens, cancel or threading.Event(),
                                        len(prompt_tokens) - 1, collect)
        return TargetScore(logprobs, len(prompt_tokens), reused)


class Drafter:
    """``k`` sampled continuations decoded together in one llama.cpp context: the prompt is
    evaluated once (sequence 0), copied to sequences 1..k-1 in the KV cache, and every step
    decodes one batch holding the next token of each unfinished sequence.

    Shares the weights of ``model``; owns its context, so the generator's cached prompt is
    left alone. Use from the model's worker thread only.
    """

    def __init__(self, model: LlamaModel, k: int, seed: int = 0):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.model = model
        self.k = k
        self._context = LlamaContext(model, k, PROMPT_CHUNK)
        self._rng = np.random.default_rng(seed)

    def close(self) -> None:
        self._context.close()

    def reseed(self, seed: int) -> None:
        """Start a fresh random stream: training draws each hole's drafts from its own
        stream, not from how many holes came before (a reused KV prefix can still move the
        last digits of the logits)."""
        self._rng = np.random.default_rng(seed)

    def _sample(self, logits: np.ndarray, temperature: float, top_p: float) -> int:
        candidates = np.argpartition(-logits, 64)[:64]
        scaled = logits[candidates].astype(np.float64) / temperature
        probabilities = np.exp(scaled - scaled.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities)
        keep = order[: int(np.searchsorted(np.cumsum(probabilities[order]), top_p)) + 1]
        chosen = self._rng.choice(keep, p=probabilities[keep] / probabilities[keep].sum())
        return int(candidates[chosen])

    def draft(self, prompt: str, max_tokens: int, cancel: threading.Event,
              should_stop: Callable[[str], bool] = lambda _: False,
              temperature: float = 0.8, top_p: float = 0.95) -> Drafts:
        llama_cpp, context = self._llama_cpp, self._context
        tokens = self.model.prompt_tokens(prompt, self.model.n_ctx - max_tokens - 1)
        started = time.perf_counter()
        common = context.evaluate(tokens, cancel)
        prompt_done = time.perf_counter()
        first = context.logits(-1).copy()
        for sequence in range(1, self.k):
            llama_cpp.llama_memory_seq_cp(context.memory, 0, sequence, -1, -1)
        outputs: list[list[int]] = [[] for _ in range(self.k)]
        texts = [""] * self.k
        live = []
        for sequence in range(self.k):
            token = self._sample(first, temperature, top_p)
            if self._accept(sequence, token, outputs, texts, should_stop):
                live.append(sequence)
        step = 0
        while live and step < max_tokens - 1:
            if cancel.is_set():
                raise Cancelled()
            position = len(tokens) + step
            context.decode([(outputs[s][-1], position, s, True) for s in live])
            still = []
            for row, sequence in enumerate(live):
                token = self._sample(context.logits(row), temperature, top_p)
                if self._accept(sequence, token, outputs, texts, should_stop):
                    still.append(sequence)
            live = still
            step += 1
        for sequence in range(1, self.k):
            llama_cpp.llama_memory_seq_rm(context.memory, sequence, -1, -1)
        llama_cpp.llama_memory_seq_rm(context.memory, 0, len(tokens), -1)
        return Drafts(texts, len(tokens), common, (prompt_done - started) * 1000,
                      (time.perf_counter() - prompt_done) * 1000)

    def _accept(self, sequence: int, token: int, outputs: list[list[int]], texts: list[str],
                should_stop: Callable[[str], bool]) -> bool:
        """Record a sampled token; whether the sequence goes on."""
        if self.model.is_end(token):
            return False
        outputs[sequence].append(token)
        texts[sequence] = self.model.detokenize(outputs[sequence])
        return not should_stop(texts[sequence])
