"""The workspace index: Split-Aggregate snippets of every source file (BM25) and the
dependency tables of the dual-context index, kept current and persisted.

Safe to read from one thread while another updates it: a file's snippets and symbols are
computed outside the lock and swapped in under it; the status counts are read without it.
Files and vectors that changed are written to a per-workspace SQLite cache (see
:mod:`aligncoder_lsp.index.store`) by :meth:`WorkspaceIndex.save`, which holds the lock only
to copy them. On restart every file's (path, mtime, size) is checked against the cache; a
damaged cache, or one written by other code or settings, is rebuilt with a log line.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.bm25 import BM25
from aligncoder_lsp.index.chunker import split_aggregate
from aligncoder_lsp.index.dependencies import DependencyGraph
from aligncoder_lsp.index.embeddings import VectorStore, text_key
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.store import (FILE_NAME, SCHEMA_VERSION, CacheError, Changes, FileRecord, IndexStore,
                                        code_fingerprint, evict_unused)
from aligncoder_lsp.index.symbols import Definition, FileSymbols, extract
from aligncoder_lsp.index.tokenize import code_tokens
from aligncoder_lsp.workspace.files import Skip, SourceFile, discover, is_indexable, language_of, read_source

logger = logging.getLogger(__name__)

FREEZE_EVERY = 500
"""Files indexed between two ``gc.freeze()`` calls. The index's objects live as long as the
server; left to the cyclic collector, each full collection walks all of them with the GIL
held (up to 1.75 s at 50,000 files), stalling every thread, the event loop included."""

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
    stopped: bool = False
    """The build was stopped before it saw every file (the figures are of what it did)."""

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())


class WorkspaceIndex:
    def __init__(self, settings: IndexSettings, cache_file: Path | None = None):
        self.settings = settings
        self.cache_file = cache_file
        self.roots: list[Path] = []
        self._lock = threading.RLock()
        self._io_lock = threading.Lock()
        """Serializes cache reads and writes; taken before ``_lock``, never while holding it."""
        self._store: IndexStore | None = None
        self._reset([])
        self._space = ""
        """The embedding space (retriever identity) of ``vectors``."""
        self._evict_spaces = False
        self._unsaved_vectors: set[bytes] = set()
        self._prune_vectors = False
        self._oversized: set[str] = set()

    @property
    def file_count(self) -> int:
        return len(self._by_path)

    @property
    def snippet_count(self) -> int:
        return len(self._snippets)

    @property
    def embedded_count(self) -> int:
        """Snippets whose text has a vector of the current retriever."""
        return self._embedded

    @staticmethod
    def cache_file_for(cache_dir: Path, roots: list[Path]) -> Path:
        key = hashlib.sha1("\n".join(sorted(str(r.resolve()) for r in roots)).encode()).hexdigest()[:16]
        return cache_dir / "index" / key / FILE_NAME

    # -- building ------------------------------------------------------------------------

    def build(self, roots: list[Path], progress: Progress | None = None,
              skip_path: Callable[[Path], bool] = lambda _: False,
              stop: threading.Event | None = None) -> IndexStats:
        """Bring the index up to date with every source file under ``roots`` (those
        ``skip_path`` rejects aside), starting from the cache when it is valid. When
        ``stop`` is set, returns after the file at hand with what was done so far."""
        stats = IndexStats()
        clock = time.perf_counter()
        roots = [root.resolve() for root in roots]
        stats.loaded_from_cache = self._load(roots)
        stats.phases["load"] = time.perf_counter() - clock

        clock = time.perf_counter()
        paths = [path for root in roots
                 for path in discover(root, self.settings.include, self.settings.exclude) if not skip_path(path)]
        stats.phases["discover"] = time.perf_counter() - clock

        seen: set[str] = set()
        for done, path in enumerate(paths, 1):
            if stop is not None and stop.is_set():
                stats.stopped = True
                break
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
            if done % FREEZE_EVERY == 0:
                gc.freeze()
        gc.freeze()
        if not stats.stopped:
            for key in set(self._by_path) - seen:
                self.remove_file(key)
                stats.removed += 1

        stats.files = self.file_count
        stats.snippets = self.snippet_count
        with self._lock:
            stats.dependency_definitions = sum(len(s.definitions) for g in self._graphs.values()
                                               for s in g.files.values())
        if self._dirty:
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
        """(Re)index one file from text that is not (or not yet) on disk, e.g. a buffer.
        A text over ``max_file_bytes`` drops the file from the index, as such a file on
        disk is never indexed (logged once until it fits again)."""
        limit = self.settings.max_file_bytes
        if len(text) > limit or len(text.encode("utf-8")) > limit:
            if path not in self._oversized:
                self._oversized.add(path)
                logger.info("not indexing the open buffer %s: larger than %d bytes", path, limit)
            self.remove_file(path)
            return
        self._oversized.discard(path)
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

    def apply_changes(self, paths: set[Path], skip_path: Callable[[Path], bool] = lambda _: False,
                      stop: threading.Event | None = None) -> int:
        """Bring the files at or under ``paths`` (from filesystem events) up to date with the
        disk; files ``skip_path`` rejects (open buffers) are left alone. A folder's files
        that are no longer indexable (e.g. after a ``.gitignore`` edit) are dropped. Stops
        after the file at hand when ``stop`` is set. Returns the number of files changed."""
        changed = 0
        settings = self.settings
        for path in sorted(paths):
            if stop is not None and stop.is_set():
                break
            root, _ = self._locate(str(path))
            if root is None:
                continue
            prefix = str(path) + os.sep
            with self._lock:
                indexed = [key for key in self._by_path if key == str(path) or key.startswith(prefix)]
            if path.is_dir() and not path.is_symlink():
                found = set()
                for file in discover(root, settings.include, settings.exclude, under=path):
                    if stop is not None and stop.is_set():
                        return changed
                    found.add(str(file))
                    if not skip_path(file) and not self._is_current(file, str(file)):
                        self.refresh_file(file)
                        changed += 1
                gone = [key for key in indexed if key not in found]
            elif path.exists() and is_indexable(root, path, settings.include, settings.exclude):
                if not skip_path(path) and not self._is_current(path, str(path)):
                    self.refresh_file(path)
                    changed += 1
                continue
            else:
                gone = indexed
            for key in gone:
                if not skip_path(Path(key)):
                    self.remove_file(key)
                    changed += 1
        return changed

    def _index(self, path: str, text: str, source: SourceFile | None, phases: Counter) -> None:
        clock = time.perf_counter()
        snippets = split_aggregate(path, text, self.settings.block_lines)
        tokens = [code_tokens(snippet.text) for snippet in snippets]
        phases["base snippets"] += time.perf_counter() - clock
        clock = time.perf_counter()
        symbols = _symbols(path, text)
        phases["dependency tables"] += time.perf_counter() - clock
        clock = time.perf_counter()
        disk = (source.mtime_ns, source.size) if source is not None else None
        with self._lock:
            self._insert(path, FileRecord(disk, snippets, tokens, symbols))
        phases["bm25"] += time.perf_counter() - clock

    def _insert(self, path: str, record: FileRecord) -> None:
        """Put one file's record in the tables (under the lock)."""
        self._drop(path)
        ids = []
        for snippet, tokens in zip(record.snippets, record.tokens):
            ids.append(self._next_id)
            self._snippets[self._next_id] = snippet
            key = self._keys[self._next_id] = text_key(snippet.text)
            self._count_key(key, 1)
            self._bm25.add(self._next_id, tokens)
            self._next_id += 1
        self._by_path[path] = ids
        self._disk[path] = record.disk
        root, relative = self._locate(path)
        if root is not None:
            if record.symbols is None:
                self._graphs[root].remove_file(relative)
            else:
                self._graphs[root].set_file(relative, record.symbols)
        self._dirty[path] = record

    def remove_file(self, path: str) -> None:
        root, relative = self._locate(path)
        with self._lock:
            if path not in self._by_path:
                return
            self._drop(path)
            del self._by_path[path]
            self._disk.pop(path, None)
            if root is not None:
                self._graphs[root].remove_file(relative)
            self._dirty[path] = None

    def _drop(self, path: str) -> None:
        for snippet_id in self._by_path.get(path, ()):
            self._bm25.remove(snippet_id)
            del self._snippets[snippet_id]
            self._count_key(self._keys.pop(snippet_id), -1)
        self.vectors.invalidate()

    def _count_key(self, key: bytes, delta: int) -> None:
        """Keep the live snippets per text key and the embedded count in step."""
        count = self._key_counts[key] + delta
        if key in self.vectors:
            self._embedded += delta
        if count:
            self._key_counts[key] = count
        else:
            del self._key_counts[key]
            self._prune_vectors = True

    def _reset(self, roots: list[Path]) -> None:
        self.roots = roots
        self._bm25 = BM25()
        self._snippets: dict[int, Snippet] = {}
        self._by_path: dict[str, list[int]] = {}
        self._disk: dict[str, tuple[int, int] | None] = {}
        """(mtime_ns, size) of the file as indexed; None when indexed from an open buffer."""
        self._keys: dict[int, bytes] = {}
        self._key_counts: Counter[bytes] = Counter()
        self._next_id = 0
        self._graphs = {root: DependencyGraph() for root in roots}
        self.vectors = VectorStore()
        self._embedded = 0
        self._dirty: dict[str, FileRecord | None] = {}
        """What changed since the last save, by path (None: removed)."""

    # -- persistence ---------------------------------------------------------------------

    def _cache_key(self) -> str:
        """Changes with the stored layout, the code that shapes the index and its settings."""
        settings = self.settings
        shaping = [settings.block_lines, settings.max_file_bytes, settings.include, settings.exclude]
        return f"{SCHEMA_VERSION}:{code_fingerprint()}:{json.dumps(shaping)}"

    def _load(self, roots: list[Path]) -> bool:
        """Fill the tables from the cache; False (and empty tables) when there is none."""
        with self._io_lock, _no_cyclic_gc():
            with self._lock:
                self._reset(roots)
            self._store, created = self._open_store()
            if self._store is None:
                return False
            loaded = None
            if not created:
                try:
                    loaded = self._store.load(roots, self._space)
                except CacheError as error:
                    logger.warning("index cache %s is unreadable (%s); rebuilding", self.cache_file, error)
                else:
                    if loaded is None:
                        logger.info("index cache %s was written by other code or settings; rebuilding",
                                    self.cache_file)
            if loaded is None:
                self._start_cache(roots)
                return False
            files, vectors = loaded
            with self._lock:
                self.vectors.add(list(vectors), list(vectors.values()))
            for path, record in files.items():
                with self._lock:
                    self._insert(path, record)
            with self._lock:
                self._dirty.clear()
                self._prune_vectors = any(key not in self._key_counts for key in self.vectors.vectors)
        return True

    def _open_store(self) -> tuple[IndexStore | None, bool]:
        """The cache of ``cache_file`` if it is safe to use, and whether it is new."""
        if self.cache_file is None:
            return None, False
        store = IndexStore(self.cache_file, self._cache_key())
        try:
            created = store.prepare()
        except CacheError as error:
            logger.warning("not using the index cache: %s", error)
            return None, False
        evict_unused(self.cache_file.parent.parent, keep=self.cache_file.parent)
        return store, created

    def _start_cache(self, roots: list[Path]) -> None:
        try:
            self._store.reset(roots)
        except (CacheError, OSError) as error:
            logger.warning("not using the index cache %s: %s", self.cache_file, error)
            self._store = None

    def save(self) -> None:
        """Write the files and vectors that changed since the last save, in one transaction.
        The index lock is held only to copy them; a failed write is retried next time."""
        if self._store is None or not (self._dirty or self._unsaved_vectors or self._prune_vectors
                                       or self._evict_spaces):
            return
        with self._io_lock:
            store = self._store
            if store is None:
                return
            with self._lock:
                changes = self._take_changes()
            try:
                store.write(changes)
            except CacheError as error:
                logger.warning("could not save the index cache %s: %s", self.cache_file, error)
                with self._lock:
                    self._dirty = {**changes.files, **self._dirty}
                    if changes.space == self._space:
                        self._unsaved_vectors.update(key for key in changes.vectors if key in self.vectors)
                        self._evict_spaces |= changes.evict_other_spaces
                return
            while changes.files:  # one record at a time: freeing them all at once is one long
                changes.files.popitem()  # C call with the GIL held (0.34 s at 50,000 files)

    def _take_changes(self) -> Changes:
        """What changed since the last save (under the lock): the dirty files' records, the
        new vectors, and the vectors no snippet uses any more."""
        stored = self.vectors.vectors
        vectors = {key: stored[key] for key in self._unsaved_vectors if key in stored}
        dead: list[bytes] = []
        if self._prune_vectors:
            dead = [key for key in stored if key not in self._key_counts]
            self.vectors.prune(self._key_counts)
        changes = Changes(self._dirty, self._space, vectors, dead, self._evict_spaces)
        self._dirty, self._unsaved_vectors = {}, set()
        self._prune_vectors = self._evict_spaces = False
        return changes

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

    def use_retriever(self, identity: str) -> None:
        """Keep vectors of the retriever ``identity`` only (vectors of two encoders never
        mix): switching loads that space's stored vectors, reports every other snippet as
        pending, and evicts the other spaces from the cache at the next save."""
        with self._io_lock:
            if identity == self._space:
                return
            stored: dict[bytes, np.ndarray] = {}
            if self._store is not None:
                try:
                    stored = self._store.load_vectors(identity)
                except CacheError as error:
                    logger.warning("could not read the vectors of the index cache %s: %s", self.cache_file, error)
            with self._lock:
                self._space = identity
                self.vectors = VectorStore()
                self.vectors.add(list(stored), list(stored.values()))
                self._embedded = sum(count for key, count in self._key_counts.items() if key in self.vectors)
                self._unsaved_vectors = set()
                self._prune_vectors = self._evict_spaces = True
        logger.info("using the vectors of retriever %s (%d snippets embedded)", identity, self._embedded)

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
        """Vectors (of the current retriever) of the texts with these keys."""
        with self._lock:
            new = [key for key in dict.fromkeys(keys) if key not in self.vectors]
            self.vectors.add(keys, vectors)
            self._embedded += sum(self._key_counts.get(key, 0) for key in new)
            self._unsaved_vectors.update(keys)

    def vectors_for(self, snippets: list[Snippet]) -> list[np.ndarray | None]:
        """Stored vectors of these snippets' texts (None where not embedded yet)."""
        with self._lock:
            stored = self.vectors.vectors
            return [None if (v := stored.get(text_key(s.text))) is None else v.astype(np.float32) for s in snippets]

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


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic collector while a cache load creates objects that live on (it
    would otherwise scan them over and over: about a quarter of the load time), then
    freeze them out of its reach."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
