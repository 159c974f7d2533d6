"""The workspace index: Split-Aggregate snippets of every source file, searchable by BM25.

Safe to read from one thread while another updates it: a file's snippets are computed
outside the lock and swapped in under it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.bm25 import BM25
from aligncoder_lsp.index.chunker import split_aggregate
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.tokenize import code_tokens
from aligncoder_lsp.workspace.files import Skip, discover, read_source

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class IndexStats:
    files: int = 0
    snippets: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0


class WorkspaceIndex:
    def __init__(self, settings: IndexSettings):
        self.settings = settings
        self.roots: list[Path] = []
        self._lock = threading.RLock()
        self._bm25 = BM25()
        self._snippets: dict[int, Snippet] = {}
        self._by_path: dict[str, list[int]] = {}
        self._ids = itertools.count()

    @property
    def file_count(self) -> int:
        return len(self._by_path)

    @property
    def snippet_count(self) -> int:
        return len(self._snippets)

    def build(self, roots: list[Path], progress: Progress | None = None,
              skip_path: Callable[[Path], bool] = lambda _: False) -> IndexStats:
        """Index every source file under ``roots`` (those ``skip_path`` rejects aside)."""
        started = time.perf_counter()
        self.roots = [root.resolve() for root in roots]
        paths = [
            path for root in self.roots
            for path in discover(root, self.settings.include, self.settings.exclude)
            if not skip_path(path)
        ]
        stats = IndexStats()
        for done, path in enumerate(paths, 1):
            source = read_source(path, self.settings.max_file_bytes)
            if isinstance(source, Skip):
                logger.info("not indexing %s: %s", path, source.value)
                stats.skipped[source.value] += 1
            else:
                self.set_file(str(path), source.text)
                stats.files += 1
            if progress:
                progress(done, len(paths))
        stats.snippets = self.snippet_count
        stats.seconds = time.perf_counter() - started
        return stats

    def set_file(self, path: str, text: str) -> None:
        """(Re)index one file from its current text."""
        snippets = split_aggregate(path, text, self.settings.block_lines)
        tokenized = [(next(self._ids), snippet, code_tokens(snippet.text)) for snippet in snippets]
        with self._lock:
            self._drop(path)
            for snippet_id, snippet, tokens in tokenized:
                self._snippets[snippet_id] = snippet
                self._bm25.add(snippet_id, tokens)
            self._by_path[path] = [snippet_id for snippet_id, _, _ in tokenized]

    def remove_file(self, path: str) -> None:
        with self._lock:
            self._drop(path)
            self._by_path.pop(path, None)

    def _drop(self, path: str) -> None:
        for snippet_id in self._by_path.get(path, ()):
            self._bm25.remove(snippet_id)
            del self._snippets[snippet_id]

    def search(self, query: str, k: int, exclude_path: str | None = None) -> list[tuple[Snippet, float]]:
        """Top-k snippets by BM25, leaving out those of ``exclude_path``."""
        tokens = code_tokens(query)
        with self._lock:
            ranked = self._bm25.top(tokens, k, keep=lambda i: self._snippets[i].path != exclude_path)
            return [(self._snippets[i], score) for i, score in ranked if score > 0]

    def relative(self, path: str) -> str:
        """``path`` relative to the workspace root that holds it."""
        for root in self.roots:
            try:
                return Path(path).relative_to(root).as_posix()
            except ValueError:
                continue
        return path
