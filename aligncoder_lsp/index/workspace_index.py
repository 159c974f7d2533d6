"""The workspace index: Split-Aggregate snippets of every source file (BM25) and the
dependency tables of the dual-context index, kept current and persisted.

Safe to read from one thread while another updates it: a file's snippets and symbols are
computed outside the lock and swapped in under it. The whole state is saved atomically to a
per-workspace cache file and reloaded on restart after checking (path, mtime, size) of every
file; a corrupt cache or one written by another version is rebuilt, with a log line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aligncoder_lsp import __version__
from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.bm25 import BM25
from aligncoder_lsp.index.chunker import split_aggregate
from aligncoder_lsp.index.dependencies import DependencyGraph
from aligncoder_lsp.index.embeddings import VectorStore, text_key
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.symbols import Definition, FileSymbols, extract
from aligncoder_lsp.index.tokenize import code_tokens
from aligncoder_lsp.workspace.files import Skip, SourceFile, discover, is_indexable, language_of, read_source

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
Progress = Callable[[int, int], None]


@dataclass
class IndexStats:
    files: int = 0
    snippets: int = 0
    dependency_definitions: int = 0
    reindexed: int = 0
    removed: int = 0
    skipped: Counter = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=Counter)
    loaded_from_cache: bool = False

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())


class WorkspaceIndex:
    def __init__(self, settings: IndexSettings, cache_file: Path | None = None):
        self.settings = settings
        self.cache_file = cache_file
        self.roots: list[Path] = []
        self._lock = threading.RLock()
        self._bm25 = BM25()
        self._snippets: dict[int, Snippet] = {}
        self._by_path: dict[str, list[int]] = {}
        self._disk: dict[str, tuple[int, int] | None] = {}
        """(mtime_ns, size) of the file as indexed; None when indexed from an open buffer."""
        self._next_id = 0
        self._graphs: dict[Path, DependencyGraph] = {}
        self._keys: dict[int, bytes] = {}
        self.vectors = VectorStore()

    @property
    def file_count(self) -> int:
        return len(self._by_path)

    @property
    def snippet_count(self) -> int:
        return len(self._snippets)

    @staticmethod
    def cache_file_for(cache_dir: Path, roots: list[Path]) -> Path:
        key = hashlib.sha1("\n".join(sorted(str(r.resolve()) for r in roots)).encode()).hexdigest()[:16]
        return cache_dir / "index" / key / "index.pkl"

    # -- building ------------------------------------------------------------------------

    def build(self, roots: list[Path], progress: Progress | None = None,
              skip_path: Callable[[Path], bool] = lambda _: False) -> IndexStats:
        """Bring the index up to date with every source file under ``roots`` (those
        ``skip_path`` rejects aside), starting from the cache when it is valid."""
        stats = IndexStats()
        clock = time.perf_counter()
        roots = [root.resolve() for root in roots]
        stats.loaded_from_cache = self._load(roots)
        if not stats.loaded_from_cache:
            with self._lock:
                self._reset(roots)
        stats.phases["load"] = time.perf_counter() - clock

        clock = time.perf_counter()
        paths = [path for root in roots
                 for path in discover(root, self.settings.include, self.settings.exclude) if not skip_path(path)]
        stats.phases["discover"] = time.perf_counter() - clock

        seen: set[str] = set()
        for done, path in enumerate(paths, 1):
            key = str(path)
            seen.add(key)
            if not self._is_current(path, key):
                clock = time.perf_counter()
                source = read_source(path, self.settings.max_file_bytes)
                stats.phases["read"] += time.perf_counter() - clock
                if isinstance(source, Skip):
                    logger.info("not indexing %s: %s", path, source.value)
                    stats.skipped[source.value] += 1
                    self.remove_file(key)
                else:
                    self._index(key, source.text, source, stats.phases)
                    stats.reindexed += 1
            if progress:
                progress(done, len(paths))
        for key in set(self._by_path) - seen:
            self.remove_file(key)
            stats.removed += 1

        stats.files = self.file_count
        stats.snippets = self.snippet_count
        stats.dependency_definitions = sum(len(s.definitions) for g in self._graphs.values() for s in g.files.values())
        if stats.reindexed or stats.removed or not stats.loaded_from_cache:
            clock = time.perf_counter()
            self.save()
            stats.phases["save"] = time.perf_counter() - clock
        return stats

    def _is_current(self, path: Path, key: str) -> bool:
        recorded = self._disk.get(key)
        if recorded is None:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        return recorded == (stat.st_mtime_ns, stat.st_size)

    def set_file(self, path: str, text: str) -> None:
        """(Re)index one file from text that is not (or not yet) on disk, e.g. a buffer."""
        self._index(path, text, None, Counter())

    def refresh_file(self, path: Path) -> None:
        """(Re)index one file from disk, or drop it when it is gone or unreadable."""
        source = read_source(path, self.settings.max_file_bytes)
        if isinstance(source, Skip):
            if source is not Skip.VANISHED:
                logger.info("not indexing %s: %s", path, source.value)
            self.remove_file(str(path))
        else:
            self._index(str(path), source.text, source, Counter())

    def apply_changes(self, paths: set[Path], skip_path: Callable[[Path], bool] = lambda _: False) -> int:
        """Bring the files at or under ``paths`` (from filesystem events) up to date with the
        disk; files ``skip_path`` rejects (open buffers) are left alone. Returns the number
        of files changed in the index."""
        changed = 0
        settings = self.settings
        for path in sorted(paths):
            root, _ = self._locate(str(path))
            if root is None:
                continue
            if path.is_dir() and not path.is_symlink():
                for found in discover(root, settings.include, settings.exclude, under=path):
                    if not skip_path(found) and not self._is_current(found, str(found)):
                        self.refresh_file(found)
                        changed += 1
                continue
            prefix = str(path) + os.sep
            with self._lock:
                gone = [key for key in self._by_path if key == str(path) or key.startswith(prefix)]
            if path.exists() and is_indexable(root, path, settings.include, settings.exclude):
                if not skip_path(path) and not self._is_current(path, str(path)):
                    self.refresh_file(path)
                    changed += 1
                continue
            for key in gone:
                if not skip_path(Path(key)):
                    self.remove_file(key)
                    changed += 1
        return changed

    def _index(self, path: str, text: str, source: SourceFile | None, phases: Counter) -> None:
        clock = time.perf_counter()
        snippets = split_aggregate(path, text, self.settings.block_lines)
        tokenized = [(snippet, code_tokens(snippet.text)) for snippet in snippets]
        phases["base snippets"] += time.perf_counter() - clock
        clock = time.perf_counter()
        symbols = _symbols(path, text)
        phases["dependency tables"] += time.perf_counter() - clock
        clock = time.perf_counter()
        root, relative = self._locate(path)
        with self._lock:
            self._drop(path)
            ids = []
            for snippet, tokens in tokenized:
                ids.append(self._next_id)
                self._snippets[self._next_id] = snippet
                self._keys[self._next_id] = text_key(snippet.text)
                self._bm25.add(self._next_id, tokens)
                self._next_id += 1
            self.vectors.invalidate()
            self._by_path[path] = ids
            self._disk[path] = (source.mtime_ns, source.size) if source is not None else None
            if root is not None and symbols is not None:
                self._graphs[root].set_file(relative, symbols)
        phases["bm25"] += time.perf_counter() - clock

    def remove_file(self, path: str) -> None:
        root, relative = self._locate(path)
        with self._lock:
            self._drop(path)
            self._by_path.pop(path, None)
            self._disk.pop(path, None)
            if root is not None:
                self._graphs[root].remove_file(relative)

    def _drop(self, path: str) -> None:
        for snippet_id in self._by_path.get(path, ()):
            self._bm25.remove(snippet_id)
            del self._snippets[snippet_id]
            del self._keys[snippet_id]
        self.vectors.invalidate()

    def _reset(self, roots: list[Path]) -> None:
        self.roots = roots
        self._bm25 = BM25()
        self._snippets, self._by_path, self._disk, self._keys = {}, {}, {}, {}
        self._next_id = 0
        self._graphs = {root: DependencyGraph() for root in roots}

    # -- persistence ---------------------------------------------------------------------

    _STATE = ("roots", "_bm25", "_snippets", "_by_path", "_disk", "_next_id", "_graphs", "_keys", "vectors")

    def _cache_key(self) -> tuple:
        return CACHE_FORMAT, __version__, self.settings.block_lines, self.settings.max_file_bytes

    def save(self) -> None:
        """Write the index atomically (a crash leaves the previous cache intact)."""
        if self.cache_file is None:
            return
        with self._lock:
            self.vectors.prune(self._keys.values())
            state = {name: getattr(self, name) for name in self._STATE}
            data = pickle.dumps({"key": self._cache_key(), "state": state}, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.cache_file.with_name(f"{self.cache_file.name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            os.replace(partial, self.cache_file)
        except OSError as error:
            logger.warning("could not save the index cache %s: %s", self.cache_file, error)

    def _load(self, roots: list[Path]) -> bool:
        if self.cache_file is None or not self.cache_file.exists():
            return False
        try:
            data = pickle.loads(self.cache_file.read_bytes())
            valid = isinstance(data, dict) and data.get("key") == self._cache_key() and data["state"]["roots"] == roots
        except Exception as error:  # any corruption: truncated, garbage, foreign classes
            logger.warning("index cache %s is unreadable (%s); rebuilding", self.cache_file, error)
            return False
        if not valid:
            logger.info("index cache %s was written by another version or settings; rebuilding", self.cache_file)
            return False
        with self._lock:
            for name, value in data["state"].items():
                setattr(self, name, value)
        return True

    # -- queries -------------------------------------------------------------------------

    def search(self, query: str, k: int, exclude_path: str | None = None) -> list[tuple[Snippet, float]]:
        """Top-k snippets by BM25, leaving out those of ``exclude_path``."""
        tokens = code_tokens(query)
        with self._lock:
            ranked = self._bm25.top(tokens, k, keep=lambda i: self._snippets[i].path != exclude_path)
            return [(self._snippets[i], score) for i, score in ranked if score > 0]

    def continuation(self, snippet: Snippet, lines: int) -> str:
        """Up to ``lines`` lines of ``snippet``'s file that follow it (what came next after
        code like the query is what a completion needs)."""
        with self._lock:  # a file's snippets are kept in the order of their lines
            following = [self._snippets[i] for i in self._by_path.get(snippet.path, [])
                         if self._snippets[i].start >= snippet.end]
        out: list[str] = []
        for block in following:
            out.extend(block.text.split("\n"))
            if len(out) >= lines:
                break
        return "\n".join(out[:lines])

    def snippets_by_path(self) -> dict[str, list[Snippet]]:
        """Every indexed file's snippets under the path it is indexed by (a copy, for audits)."""
        with self._lock:
            return {path: [self._snippets[i] for i in ids] for path, ids in self._by_path.items()}

    def definitions_of(self, path: str) -> list[Definition]:
        """The definitions the dependency tables hold for the file at ``path``."""
        root, relative = self._locate(path)
        with self._lock:
            symbols = self._graphs[root].files.get(relative) if root is not None else None
            return list(symbols.definitions.values()) if symbols is not None else []

    def document_frequency(self, token: str) -> int:
        """Snippets that contain ``token`` (a lower-cased code token)."""
        with self._lock:
            return self._bm25.document_frequency(token)

    def dependencies(self, path: str, text: str) -> list[Snippet]:
        """Signatures that the file at ``path`` (with its current ``text``) imports from the
        workspace, as dependency snippets with absolute paths."""
        root, relative = self._locate(path)
        language = language_of(path)
        if root is None or language is None:
            return []
        with self._lock:
            try:
                found = self._graphs[root].dependencies(relative, text, language)
            except Exception:  # a tree the extractor does not expect must not fail the request
                logger.exception("dependency resolution failed for %s", path)
                return []
        return [replace(s, path=str(root / s.path)) for s in found]

    # -- vectors ---------------------------------------------------------------------------

    def pending_embeddings(self, limit: int) -> list[tuple[bytes, str]]:
        """Up to ``limit`` distinct snippet texts that have no vector yet."""
        pending: dict[bytes, str] = {}
        with self._lock:
            for snippet_id, key in self._keys.items():
                if key not in self.vectors and key not in pending:
                    pending[key] = self._snippets[snippet_id].text
                    if len(pending) >= limit:
                        break
        return list(pending.items())

    def add_embeddings(self, keys: list[bytes], vectors) -> None:
        with self._lock:
            self.vectors.add(keys, vectors)

    def vectors_for(self, snippets: list[Snippet]) -> list[np.ndarray | None]:
        """Stored vectors of these snippets' texts (None where not embedded yet)."""
        with self._lock:
            stored = self.vectors.vectors
            return [None if (v := stored.get(text_key(s.text))) is None else v.astype(np.float32) for s in snippets]

    @property
    def embedded_count(self) -> int:
        with self._lock:
            return sum(1 for key in self._keys.values() if key in self.vectors)

    def dense_search(self, query_vector, k: int, exclude_path: str | None = None) -> list[tuple[Snippet, float]]:
        """Top-k snippets by cosine similarity to ``query_vector`` (embedded snippets only)."""
        with self._lock:
            ranked = self.vectors.search(query_vector, 4 * k + 16, self._keys)
            hits = [(self._snippets[i], score) for i, score in ranked if self._snippets[i].path != exclude_path]
        return hits[:k]

    def relative(self, path: str) -> str:
        """``path`` relative to the workspace root that holds it."""
        return self._locate(path)[1]

    def _locate(self, path: str) -> tuple[Path | None, str]:
        """The workspace root holding ``path`` and the path relative to it."""
        for root in self.roots:
            try:
                return root, Path(path).relative_to(root).as_posix()
            except ValueError:
                continue
        return None, path


def _symbols(path: str, text: str) -> FileSymbols | None:
    language = language_of(path)
    if language is None:
        return None
    try:
        return extract(text, language)
    except Exception:  # one odd file must not stop indexing
        logger.exception("could not extract symbols of %s", path)
        return None
