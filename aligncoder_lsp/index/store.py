"""The index cache on disk: one SQLite file per workspace, written file by file.

SQLite rather than pickle: a cache planted by someone else can at worst fail to load, never
run code, and a change to one file rewrites that file's row instead of the whole index.
Every row is type-checked on load; a wrong schema, a key written by other code or settings,
or any malformed row makes the caller rebuild. The cache holds private source text, so its
folder is 0700 and its file 0600, neither may be a symbolic link or another user's, and
caches of workspaces unused for ``EVICT_AFTER_DAYS`` are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from aligncoder_lsp.index import bm25, chunker, snippets, symbols, tokenize
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.symbols import GRAMMARS, Definition, FileSymbols, Import

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""Layout of the tables (the database's ``user_version``); pickle caches were version 1."""
FILE_NAME = "index.sqlite3"
EVICT_AFTER_DAYS = 30
_CACHE_FILES = {FILE_NAME, f"{FILE_NAME}-wal", f"{FILE_NAME}-shm", "index.pkl"}
_SHAPING_MODULES = (bm25, chunker, snippets, symbols, tokenize)

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER,
                    snippets TEXT NOT NULL, symbols TEXT);
CREATE TABLE vectors (space TEXT NOT NULL, key BLOB NOT NULL, vector BLOB NOT NULL,
                      PRIMARY KEY (space, key)) WITHOUT ROWID;
"""


class CacheError(Exception):
    """The cache cannot be used: unsafe, unreadable, or not what this code writes."""


@dataclass(frozen=True)
class FileRecord:
    """What the index holds of one file. ``disk`` is (mtime_ns, size) as indexed, None for
    text from an open buffer; ``tokens`` are the BM25 tokens of each snippet."""

    disk: tuple[int, int] | None
    snippets: list[Snippet]
    tokens: list[list[str]]
    symbols: FileSymbols | None


@dataclass
class Changes:
    """One flush: files to write (None: delete) and vectors to add or delete."""

    files: dict[str, FileRecord | None]
    space: str
    vectors: dict[bytes, np.ndarray]
    dead_vectors: list[bytes]
    evict_other_spaces: bool = False


@cache
def code_fingerprint() -> str:
    """Hash of the code and queries that shape what the index stores."""
    digest = hashlib.sha256()
    sources = [Path(module.__file__) for module in _SHAPING_MODULES] + [Path(__file__)]
    for path in sources + sorted(GRAMMARS.glob("*.scm")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class IndexStore:
    """The SQLite cache of one workspace. Writes are serialized by the caller."""

    def __init__(self, path: Path, key: str):
        self.path = path
        self.key = key

    # -- safety ----------------------------------------------------------------------------

    def prepare(self) -> bool:
        """Create the private folder (and the empty file) or check the existing ones; raises
        :class:`CacheError` when they are not safely ours. True when the file is new."""
        folder = self.path.parent
        for directory in (folder.parent, folder):
            _private_folder(directory)
        legacy = folder / "index.pkl"
        if legacy.exists() or legacy.is_symlink():
            logger.info("deleting the old index cache %s (never read)", legacy)
            legacy.unlink(missing_ok=True)
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            created = True
        except FileExistsError:
            _check_owned(self.path, stat.S_ISREG, "file")
            os.chmod(self.path, 0o600)
            created = False
        except OSError as error:
            raise CacheError(f"cannot create {self.path}: {error}") from error
        os.utime(folder)  # the last use, for eviction
        return created

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        _check_owned(self.path, stat.S_ISREG, "file")
        uri = f"{self.path.absolute().as_uri()}?nofollow=1"  # SQLite itself refuses a symbolic link too
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            yield connection
            # Checkpoint here, where SQLite runs without the GIL: closing the connection would
            # do it with the GIL held, stalling every thread (0.35 s at 50,000 files).
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def reset(self, roots: list[Path]) -> None:
        """Start an empty cache for ``roots`` (whatever the file held is discarded)."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.prepare()
        with self._connect() as connection, connection:
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            connection.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("key", self.key), ("roots", json.dumps([str(r) for r in roots]))])

    # -- reading ---------------------------------------------------------------------------

    def load(self, roots: list[Path], space: str) -> tuple[dict[str, FileRecord], dict[bytes, np.ndarray]] | None:
        """The stored files and the vectors of ``space``; None when the cache was written by
        other code, settings or roots. Raises :class:`CacheError` when it is damaged."""
        try:
            with self._connect() as connection:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    raise CacheError("not an index cache")
                if version != SCHEMA_VERSION:
                    return None
                meta = dict(connection.execute("SELECT name, value FROM meta"))
                if meta.get("key") != self.key or meta.get("roots") != json.dumps([str(r) for r in roots]):
                    return None
                files = {row[0]: _file_record(row) for row in connection.execute("SELECT * FROM files")}
                vectors = _vectors(connection.execute("SELECT key, vector FROM vectors WHERE space = ?", (space,)))
        except sqlite3.Error as error:
            raise CacheError(str(error)) from error
        except (ValueError, TypeError) as error:  # a row this code does not write
            raise CacheError(f"malformed row: {error}") from error
        return files, vectors

    def load_vectors(self, space: str) -> dict[bytes, np.ndarray]:
        try:
            with self._connect() as connection:
                return _vectors(connection.execute("SELECT key, vector FROM vectors WHERE space = ?", (space,)))
        except (sqlite3.Error, ValueError, TypeError) as error:
            raise CacheError(str(error)) from error

    # -- writing ---------------------------------------------------------------------------

    def write(self, changes: Changes) -> None:
        """Apply ``changes`` in one transaction. Raises :class:`CacheError`."""
        removed = [(path,) for path, record in changes.files.items() if record is None]
        rows = [_file_row(path, record) for path, record in changes.files.items() if record is not None]
        vectors = [(changes.space, key, vector.astype(np.float16).tobytes()) for key, vector in changes.vectors.items()]
        try:
            with self._connect() as connection, connection:
                connection.executemany("DELETE FROM files WHERE path = ?", removed)
                connection.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", rows)
                if changes.evict_other_spaces:
                    connection.execute("DELETE FROM vectors WHERE space != ?", (changes.space,))
                connection.executemany("DELETE FROM vectors WHERE space = ? AND key = ?",
                                       [(changes.space, key) for key in changes.dead_vectors])
                connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", vectors)
        except (sqlite3.Error, OSError) as error:
            raise CacheError(str(error)) from error


def evict_unused(index_folder: Path, keep: Path, days: float = EVICT_AFTER_DAYS) -> None:
    """Delete the caches (folders of cache files under ``index_folder``, ours, not links)
    whose last use is older than ``days``."""
    limit = time.time() - days * 86400
    try:
        entries = list(os.scandir(index_folder))
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            old = (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and info.st_mtime < limit
                   and Path(entry.path) != keep and set(os.listdir(entry.path)) <= _CACHE_FILES)
        except OSError:
            continue
        if old:
            logger.info("deleting the index cache %s (unused for %d days)", entry.path, days)
            shutil.rmtree(entry.path, ignore_errors=True)


def _private_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise CacheError(f"cannot create {folder}: {error}") from error
    _check_owned(folder, stat.S_ISDIR, "folder")
    os.chmod(folder, 0o700)


def _check_owned(path: Path, is_kind, kind: str) -> None:
    """Refuse a symbolic link, another user's entry, or an entry of the wrong kind."""
    try:
        info = os.lstat(path)
    except OSError as error:
        raise CacheError(f"cannot read {path}: {error}") from error
    if stat.S_ISLNK(info.st_mode):
        raise CacheError(f"{path} is a symbolic link")
    if info.st_uid != os.geteuid():
        raise CacheError(f"{path} belongs to another user")
    if not is_kind(info.st_mode):
        raise CacheError(f"{path} is not a {kind}")


# -- rows ------------------------------------------------------------------------------------

def _file_row(path: str, record: FileRecord) -> tuple:
    mtime, size = record.disk if record.disk is not None else (None, None)
    snippets = [[s.start, s.end, s.text, s.kind, s.symbol, " ".join(tokens)]
                for s, tokens in zip(record.snippets, record.tokens)]
    return path, mtime, size, json.dumps(snippets), None if record.symbols is None else json.dumps(_symbols_json(record.symbols))


def _file_record(row: tuple) -> FileRecord:
    path, mtime, size, snippets_json, symbols_json = row
    _expect(type(path) is str and type(snippets_json) is str, "path or snippets")
    if mtime is None and size is None:
        disk = None
    else:
        _expect(type(mtime) is int and type(size) is int, "mtime and size")
        disk = (mtime, size)
    snippets, tokens = [], []
    for start, end, text, kind, symbol, joined in json.loads(snippets_json):
        _expect(type(start) is int and type(end) is int and type(text) is str and type(kind) is str
                and type(symbol) is str and type(joined) is str, "snippet fields")
        snippets.append(Snippet(path, start, end, text, kind, symbol))
        tokens.append(joined.split(" ") if joined else [])
    symbols = None if symbols_json is None else _symbols_from_json(json.loads(symbols_json))
    return FileRecord(disk, snippets, tokens, symbols)


def _symbols_json(symbols: FileSymbols) -> list:
    return [symbols.language, symbols.package, [[i.module, i.name, i.alias, i.static] for i in symbols.imports],
            [[d.name, d.kind, d.start, d.end, d.signature] for d in symbols.definitions.values()]]


def _symbols_from_json(data) -> FileSymbols:
    language, package, import_items, definition_items = data
    _expect(type(language) is str and type(package) is str, "language and package")
    imports = []
    for module, name, alias, static in import_items:
        _expect(type(module) is str and (name is None or type(name) is str)
                and (alias is None or type(alias) is str) and type(static) is bool, "import fields")
        imports.append(Import(module, name, alias, static))
    definitions = {}
    for name, kind, start, end, signature in definition_items:
        _expect(type(name) is str and type(kind) is str and type(start) is int and type(end) is int
                and type(signature) is str, "definition fields")
        definitions[name] = Definition(name, kind, start, end, signature)
    return FileSymbols(language, package, imports, definitions)


def _vectors(rows) -> dict[bytes, np.ndarray]:
    vectors: dict[bytes, np.ndarray] = {}
    size = None
    for key, blob in rows:
        _expect(isinstance(key, bytes) and isinstance(blob, bytes) and len(blob) % 2 == 0 and blob, "vector")
        _expect(size is None or len(blob) == size, "vector dimension")
        size = len(blob)
        vectors[key] = np.frombuffer(blob, dtype=np.float16)
    return vectors


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"unexpected {what}")
