"""Dense vectors of snippets for the AlignRetriever: the encoder and the vector store.

The encoder is any sentence-transformers folder (default: the embedded all-MiniLM-L6-v2).
On CPUs with native bfloat16 (AVX512-BF16 / AMX) it runs in bfloat16, about 3x faster
than float32 with the same rankings (``aligncoder-lsp bench embeddings`` measures both).
Vectors are keyed by a hash of the snippet text, so unchanged snippets are never embedded
twice, across edits, rebuilds and restarts; and by the retriever's identity, so that vectors
of two encoders never meet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Protocol
from pathlib import Path

import numpy as np

from aligncoder_lsp.models.embedded import ModelUnavailable, embedded_retriever
from aligncoder_lsp.models.llama_backend import Cancelled

logger = logging.getLogger(__name__)

BACKGROUND_BATCH = 4
"""Snippets per background batch: a query waits behind at most one batch. At one thread,
256 tokens, bfloat16, a batch of 4 took 0.15 s (at most 0.26 s; 26 snippets/s), one of 16
took 0.95 s (17 snippets/s: longer batches pad more)."""
CANCEL_POLL_SECONDS = 0.02
PARENT_POLL_SECONDS = 0.5
QUERY_TOWER_FILE = "retriever.json"
"""Marks a retriever folder as a query tower and names the retriever of its snippets."""


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def native_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str) -> str:
    if requested == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return requested


def document_folder(folder: Path) -> Path | None:
    """The retriever that encodes snippets for the query tower in ``folder`` (named by its
    ``retriever.json``: ``"embedded"`` or a path relative to ``folder``); None when
    ``folder`` encodes both queries and snippets."""
    try:
        spec = json.loads((folder / QUERY_TOWER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"{folder / QUERY_TOWER_FILE} is unreadable: {error}") from error
    documents = spec.get("documents") if isinstance(spec, dict) else None
    if documents == "embedded":
        return embedded_retriever()
    if not isinstance(documents, str) or not documents:
        raise ModelUnavailable(f"{folder / QUERY_TOWER_FILE} names no snippet retriever (\"documents\")")
    return (folder / documents).resolve()


def retriever_identity(folder: str, precision: str, max_tokens: int) -> str:
    """The embedding space of an encoder's snippet vectors: the folder that makes them (a
    query tower's base), the names and sizes of its files, the precision and the maximum
    tokens. Vectors of two identities are never mixed."""
    try:
        path = Path(folder).expanduser().resolve() if folder else embedded_retriever()
        path = document_folder(path) or path
    except ModelUnavailable:
        return f"unavailable|{resolve_precision(precision)}|{max_tokens}"
    try:
        files = sorted(f"{p.relative_to(path)}:{p.stat().st_size}"
                       for p in itertools.islice(path.rglob("*"), 1000) if p.is_file())
    except OSError:
        files = []
    digest = hashlib.sha1("\n".join(files).encode()).hexdigest()[:12]
    return f"{path}|{digest}|{resolve_precision(precision)}|{max_tokens}"


class TextEncoder(Protocol):
    def encode(self, texts: list[str], cancel: threading.Event | None = None, queries: bool = False) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (snippets, or completion
        ``queries``); raises :class:`Cancelled` when ``cancel`` is set before they are ready."""


class Encoder:
    """A sentence-transformers model, loaded on first use; thread-safe. A query tower (a
    folder with ``retriever.json``) encodes queries, and its base encodes snippets."""

    def __init__(self, folder: str = "", precision: str = "auto", max_seq_length: int = 256, threads: int = 0):
        self.folder = Path(folder).expanduser() if folder else None
        self.precision = resolve_precision(precision)
        self.max_seq_length = max_seq_length
        self.threads = threads
        self._model = None
        self._query_model = None
        self._lock = threading.Lock()

    def _load_both(self) -> None:
        folder = self.folder or embedded_retriever()
        documents = document_folder(folder)
        self._query_model = self._load(folder)
        self._model = self._load(documents) if documents else self._query_model

    def _load(self, folder: Path):
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        # A progress bar on stderr reaches editors as an error message (and logs are no terminal).
        transformers.utils.logging.disable_progress_bar()
        if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
            raise ModelUnavailable(f"retriever folder {folder} holds no sentence-transformers model")
        if self.threads:
            torch.set_num_threads(self.threads)
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        try:
            model = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                                        model_kwargs={"torch_dtype": dtype})
        except Exception as error:  # corrupt weights, missing files, bad config
            raise ModelUnavailable(f"could not load the retriever {folder}: {error}") from error
        model.max_seq_length = self.max_seq_length
        logger.info("loaded retriever %s (%s, max %d tokens)", folder, self.precision, self.max_seq_length)
        return model

    @property
    def dimension(self) -> int:
        return self.model().get_embedding_dimension()

    def model(self, queries: bool = False):
        with self._lock:
            if self._model is None:
                self._load_both()
            return self._query_model if queries else self._model

    def encode(self, texts: list[str], cancel: threading.Event | None = None, queries: bool = False,
               batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (``cancel`` is checked before)."""
        import torch

        model = self.model(queries)
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        with self._lock, torch.inference_mode():
            vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_tensor=True, show_progress_bar=False)
        return vectors.float().cpu().numpy()


_worker_encoder: Encoder | None = None


def _start_worker(parent: int, folder: str, precision: str, max_seq_length: int, threads: int) -> None:
    """``parent``: the server's pid, passed along (a server that died while the worker started
    has already left the worker to another parent)."""
    global _worker_encoder
    os.nice(10)  # completions in the server process come first
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="parent-watch", daemon=True).start()
    _worker_encoder = Encoder(folder, precision, max_seq_length, threads)


def _exit_when_orphaned(parent: int) -> None:
    """End the worker once its server is gone, even when the server was killed outright and
    could not shut the pool down (the worker is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def _encode_in_worker(texts: list[str], queries: bool) -> np.ndarray:
    return _worker_encoder.encode(texts, queries=queries)


class EncoderProcess:
    """An :class:`Encoder` in a child process at low priority.

    Keeps torch, its thread pool and its memory out of the server process, so background
    embedding never competes with llama.cpp inside one process.
    """

    def __init__(self, folder: str = "", precision: str = "auto", max_seq_length: int = 256, threads: int = 0):
        self._arguments = (folder, precision, max_seq_length, threads)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _started(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                                 initializer=_start_worker, initargs=(os.getpid(), *self._arguments))
            return self._pool

    def encode(self, texts: list[str], cancel: threading.Event | None = None, queries: bool = False) -> np.ndarray:
        """Vectors from the child process. A request waiting behind a background batch
        gives up as soon as ``cancel`` is set (raising :class:`Cancelled`)."""
        pool = self._started()
        try:
            future = pool.submit(_encode_in_worker, texts, queries)
            while True:
                try:
                    return future.result(timeout=None if cancel is None else CANCEL_POLL_SECONDS)
                except TimeoutError:
                    if cancel.is_set():
                        future.cancel()
                        raise Cancelled() from None
        except BrokenProcessPool as error:
            with self._pool_lock:
                if self._pool is pool:
                    self._pool = None
            raise ModelUnavailable(f"the retriever process stopped: {error}") from error

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class VectorStore:
    """Vectors by text key (float16), and a matrix of the live snippets for top-k search."""

    def __init__(self) -> None:
        self.vectors: dict[bytes, np.ndarray] = {}
        self._matrix: np.ndarray | None = None
        self._rows: list[int] = []

    def __contains__(self, key: bytes) -> bool:
        return key in self.vectors

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, vectors):
            self.vectors[key] = vector.astype(np.float16)
        self._matrix = None

    def invalidate(self) -> None:
        self._matrix = None

    def prune(self, live: Iterable[bytes]) -> None:
        keep = set(live)
        self.vectors = {key: vector for key, vector in self.vectors.items() if key in keep}
        self._matrix = None

    def search(self, query: np.ndarray, k: int, snippets: dict[int, bytes]) -> list[tuple[int, float]]:
        """Top-k snippet ids by cosine similarity (snippets without a vector are left out)."""
        if self._matrix is None:
            self._rows = [sid for sid, key in snippets.items() if key in self.vectors]
            self._matrix = (np.stack([self.vectors[snippets[sid]] for sid in self._rows]).astype(np.float32)
                            if self._rows else np.zeros((0, query.shape[-1]), np.float32))
        if not self._rows:
            return []
        scores = self._matrix @ query.astype(np.float32)
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        return [(self._rows[i], float(scores[i])) for i in top]

    def similarity(self, query: np.ndarray, keys: list[bytes]) -> list[float | None]:
        return [float(self.vectors[key].astype(np.float32) @ query) if key in self.vectors else None for key in keys]
