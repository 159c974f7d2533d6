"""The one guarded reader for source files, and which files of a workspace are indexed.

Every file the index sees passes through :func:`read_source`: regular files only (never a
FIFO, socket, device or symlink), a size cap, a binary sniff, strict UTF-8 decoding, and
tolerance of files that vanish while being read.

Which files: in a git work tree exactly what ``git ls-files -co --exclude-standard`` lists
(tracked files plus untracked files no ignore rule excludes: nested ``.gitignore`` files,
``.git/info/exclude``, ``core.excludesFile``); elsewhere the same rules evaluated here. On top
of that ``index.include`` patterns force files in, ``index.exclude`` patterns and the
always-excluded folders keep them out. Submodules and nested repositories are listed by
their own git, under their own rules. A file symlink is never indexed under its own name:
its target, when it is a workspace file, is indexed at its real path.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import pathspec

from aligncoder_lsp.workspace.git import GitError, forget, git_listing

logger = logging.getLogger(__name__)

LANGUAGES = {".py": "python", ".pyi": "python", ".java": "java"}

ALWAYS_EXCLUDED = [
    ".git/", ".hg/", ".svn/", ".venv/", "venv/", "node_modules/", "__pycache__/",
    ".tox/", ".nox/", ".mypy_cache/", ".pytest_cache/", "site-packages/",
]


class Skip(str, Enum):
    """Why a file was not indexed."""

    TOO_LARGE = "too large"
    BINARY = "binary"
    UNDECODABLE = "not UTF-8"
    VANISHED = "vanished"
    UNREADABLE = "unreadable"
    NOT_REGULAR = "not a regular file"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    text: str
    mtime_ns: int
    size: int


def language_of(path: str | Path) -> str | None:
    return LANGUAGES.get(Path(path).suffix.lower())


def read_source(path: Path, max_bytes: int) -> SourceFile | Skip:
    """Read a source file, or say why it cannot be indexed. Never blocks: the file is
    opened non-blocking without following a final symlink, and read only if it is a
    regular file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Skip.VANISHED
    except OSError as error:
        return Skip.NOT_REGULAR if error.errno in (errno.ELOOP, errno.ENXIO) else Skip.UNREADABLE
    try:
        with os.fdopen(descriptor, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                return Skip.NOT_REGULAR
            if status.st_size > max_bytes:
                return Skip.TOO_LARGE
            data = handle.read(max_bytes + 1)
    except OSError:
        return Skip.UNREADABLE
    if len(data) > max_bytes:
        return Skip.TOO_LARGE
    if b"\x00" in data[:8192]:
        return Skip.BINARY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Skip.UNDECODABLE
    return SourceFile(path, text.replace("\r\n", "\n"), status.st_mtime_ns, status.st_size)


class UserRules:
    """``index.include`` (forces files in, even ignored ones) and ``index.exclude`` plus the
    always-excluded folders (keep files out), in gitignore syntax, relative to the root."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]):
        self.include = pathspec.GitIgnoreSpec.from_lines(include) if include else None
        self.exclude = pathspec.GitIgnoreSpec.from_lines(ALWAYS_EXCLUDED + list(exclude))

    def forced(self, key: str) -> bool:
        return self.include is not None and self.include.match_file(key)

    def excluded(self, key: str) -> bool:
        """``key`` ends with "/" for a directory; a file under an excluded folder is excluded."""
        return not self.forced(key) and self.exclude.match_file(key)


@lru_cache(maxsize=32)
def _user_rules(include: tuple[str, ...], exclude: tuple[str, ...]) -> UserRules:
    return UserRules(include, exclude)


class GitignoreRules:
    """gitignore semantics without git: nested ``.gitignore`` files (and ``.git/info/exclude``
    at the root) evaluated like git, the deepest file first and the last matching pattern
    of a file deciding, so a nested ``!pattern`` re-includes what a parent file ignored."""

    def __init__(self, root: Path):
        self.root = root
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}

    def ignored(self, relative: str, is_dir: bool) -> bool:
        key = relative + "/" if is_dir else relative
        parts = relative.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            prefix = "/".join(parts[:depth])
            for spec in self._specs_of(prefix):
                verdict = spec.check_file(key[len(prefix) + 1:] if prefix else key).include
                if verdict is not None:
                    return verdict
        return False

    def _specs_of(self, prefix: str) -> list[pathspec.GitIgnoreSpec]:
        """The rules that apply in directory ``prefix``, the strongest first."""
        directory = self.root / prefix
        found = [_load_spec(directory / ".gitignore")]
        if not prefix:
            found.append(_load_spec(directory / ".git" / "info" / "exclude"))
        return [spec for spec in found if spec is not None]


def _load_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        status = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return _parse_spec(path, status.st_mtime_ns, status.st_size, status.st_ino)


@lru_cache(maxsize=4096)
def _parse_spec(path: Path, mtime_ns: int, size: int, inode: int) -> pathspec.GitIgnoreSpec | None:
    """One rules file, parsed once per version of it (the stat fields are the cache key)."""
    source = read_source(path, 1 << 20)
    if isinstance(source, Skip):
        logger.info("ignoring rules in %s: %s", path, source.value)
        return None
    return pathspec.GitIgnoreSpec.from_lines(source.text.splitlines())


def discover(root: Path, include: list[str] = (), exclude: list[str] = (), under: Path | None = None) -> Iterator[Path]:
    """Yield the Python and Java files under ``root`` (or only those under its subfolder
    ``under``) that are indexed: regular files, not ignored, never through a symlink."""
    root = root.resolve()
    rules = _user_rules(tuple(include), tuple(exclude))
    start = root if under is None else under
    if under is not None:
        relative = start.relative_to(root).as_posix()
        if relative != "." and (rules.excluded(relative + "/") or _through_link(root, start)):
            return
    found = _discover_listed(root, start, rules)
    if found is None:
        found = _discover_walking(root, start, rules)
    for path in found:
        if _is_source_file(path):
            yield path


def _discover_listed(root: Path, start: Path, rules: UserRules) -> list[Path] | None:
    """What git lists under ``start``, or None outside a git work tree or when git fails."""
    listing = git_listing(root, _worth_listing)
    if listing is None:
        return None
    try:
        names = listing.files_under(start.relative_to(root).as_posix())
    except GitError as error:
        logger.warning("evaluating ignore rules without git: %s", error)
        forget(root)
        return None
    if rules.include is not None:  # forced files may be ignored ones, which git does not list
        names |= {name for name in _walk_names(root, start, rules.excluded) if rules.forced(name)}
    return [root / name for name in sorted(names) if language_of(name) is not None and not rules.excluded(name)]


def _discover_walking(root: Path, start: Path, rules: UserRules) -> Iterator[Path]:
    ignore = GitignoreRules(root)

    def skipped(key: str) -> bool:
        is_dir = key.endswith("/")
        return rules.excluded(key) or (not rules.forced(key) and ignore.ignored(key.rstrip("/"), is_dir))

    if start != root and _ignored_on_the_way(root, start, skipped):
        return
    for name in _walk_names(root, start, skipped):
        if language_of(name) is not None:
            yield root / name


def _walk_names(root: Path, start: Path, skipped) -> Iterator[str]:
    """Root-relative names of the regular files under ``start``, in sorted order, not
    entering symlinked directories nor those ``skipped("dir/")`` rejects."""
    base = start.relative_to(root).as_posix()
    pending = ["" if base == "." else base + "/"]
    while pending:
        prefix = pending.pop()
        try:
            with os.scandir(root / prefix) as entries:
                listed = sorted(entries, key=lambda entry: entry.name, reverse=True)
        except OSError as error:
            logger.info("skipping %s: %s", root / prefix, error.strerror)
            continue
        for entry in listed:
            name = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not skipped(name + "/"):
                        pending.append(name + "/")
                elif entry.is_file(follow_symlinks=False) and not skipped(name):
                    yield name
            except OSError:
                continue
    return


def is_indexable(root: Path, path: Path, include: list[str] = (), exclude: list[str] = ()) -> bool:
    """Whether ``path`` (a file under ``root``) is a source file discovery would yield.
    Cheap enough to call for every opened or changed document: in a git repository the
    listing is cached and taken again only when ignore rules or the git index change, or
    a file appears that the listing cannot know about."""
    if language_of(path) is None:
        return False
    root = root.resolve()
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        return False
    rules = _user_rules(tuple(include), tuple(exclude))
    if rules.excluded(relative) or _through_link(root, path.parent) or not _is_source_file(path):
        return False
    if rules.forced(relative):
        return True
    listing = git_listing(root, _worth_listing)
    if listing is not None:
        try:
            return listing.lists(relative)
        except GitError as error:
            logger.warning("evaluating ignore rules without git: %s", error)
            forget(root)
    ignore = GitignoreRules(root)
    return not _ignored_on_the_way(root, path, lambda key: ignore.ignored(key.rstrip("/"), key.endswith("/")))


def _is_source_file(path: Path) -> bool:
    """A regular file itself, not a symlink to one, nor a FIFO, socket or device."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _through_link(root: Path, folder: Path) -> bool:
    """Whether ``folder`` or a folder between ``root`` and it is a symlink (discovery never
    enters one)."""
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return True
    return False


def _worth_listing(name: str) -> bool:
    """The names a cached git listing keeps: source files, and the rules files whose
    presence it must remember."""
    return language_of(name) is not None or name.rpartition("/")[2] == ".gitignore"


def _ignored_on_the_way(root: Path, target: Path, skipped) -> bool:
    """Whether ``target`` or a folder between ``root`` and it is ``skipped`` (git does not
    look inside an ignored folder, so nothing below one can be re-included)."""
    parts = target.relative_to(root).parts
    for depth in range(1, len(parts) + 1):
        key = "/".join(parts[:depth])
        if skipped(key + "/" if depth < len(parts) or target.is_dir() else key):
            return True
    return False
