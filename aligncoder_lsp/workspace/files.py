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
    return LANGUAGES.get(os.path.splitext(path)[1].lower())


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


_ALWAYS_EXCLUDED_NAMES = frozenset(pattern.rstrip("/") for pattern in ALWAYS_EXCLUDED)


class UserRules:
    """``index.include`` (forces files in, even ignored ones), ``index.exclude`` and the
    always-excluded folders (keep files out), in gitignore syntax, relative to the root."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]):
        self.include = pathspec.GitIgnoreSpec.from_lines(include) if include else None
        self.exclude = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None

    def forced(self, key: str) -> bool:
        return self.include is not None and self.include.match_file(key)

    def excluded(self, key: str) -> bool:
        """``key`` ends with "/" for a folder; a file under an excluded folder is excluded."""
        if self.forced(key):
            return False
        folders = key.split("/")[:-1]
        return not _ALWAYS_EXCLUDED_NAMES.isdisjoint(folders) or (
            self.exclude is not None and self.exclude.match_file(key))


@lru_cache(maxsize=32)
def _user_rules(include: tuple[str, ...], exclude: tuple[str, ...]) -> UserRules:
    return UserRules(include, exclude)


class GitignoreRules:
    """gitignore semantics without git: nested ``.gitignore`` files (and ``.git/info/exclude``
    at the root) evaluated like git, the deepest file first and the last matching pattern
    of a file deciding, so a nested ``!pattern`` re-includes what a parent file ignored."""

    def __init__(self, root: Path):
        self.root = root
        self._specs: dict[str, list[pathspec.GitIgnoreSpec]] = {}

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
        if prefix not in self._specs:
            directory = self.root / prefix
            found = [_load_spec(directory / ".gitignore")]
            if not prefix:
                found.append(_load_spec(directory / ".git" / "info" / "exclude"))
            self._specs[prefix] = [spec for spec in found if spec is not None]
        return self._specs[prefix]


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
    folder = "." if under is None else under.relative_to(root).as_posix()
    if folder != "." and (rules.excluded(folder + "/") or _through_link(str(root), folder + "/")):
        return
    names = _listed_names(root, folder, rules)
    if names is None:
        names = _walked_names(root, folder, rules)
    base = str(root) + os.sep
    for name in names:
        if _is_regular(base + name):
            yield root / name


def _listed_names(root: Path, folder: str, rules: UserRules) -> list[str] | None:
    """What git lists under ``folder``, or None outside a git work tree or when git fails."""
    listing = git_listing(root, _worth_listing)
    if listing is None:
        return None
    try:
        names = listing.files_under(folder)
    except GitError as error:
        logger.warning("evaluating ignore rules without git: %s", error)
        forget(root)
        return None
    if rules.include is not None:  # forced files may be ignored ones, which git does not list
        names |= {name for name in _walk_names(root, folder, rules.excluded) if rules.forced(name)}
    return [name for name in sorted(names) if language_of(name) is not None and not rules.excluded(name)]


def _walked_names(root: Path, folder: str, rules: UserRules) -> Iterator[str]:
    ignore = GitignoreRules(root)

    def skipped(key: str) -> bool:
        return rules.excluded(key) or (not rules.forced(key) and ignore.ignored(key.rstrip("/"), key.endswith("/")))

    if folder != "." and _ignored_on_the_way(folder + "/", skipped):
        return
    for name in _walk_names(root, folder, skipped):
        if language_of(name) is not None:
            yield name


def _walk_names(root: Path, folder: str, skipped) -> Iterator[str]:
    """Root-relative names of the regular files under ``folder``, in sorted order, not
    entering symlinked folders nor those ``skipped("name/")`` rejects."""
    pending = ["" if folder == "." else folder + "/"]
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


def is_indexable(root: Path, path: Path, include: list[str] = (), exclude: list[str] = ()) -> bool:
    """Whether ``path`` (a file under ``root``) is a source file discovery would yield (or,
    for a buffer not yet saved, would yield once saved).
    Cheap enough to call for every opened or changed document: in a git work tree the
    listing is cached and taken again only when ignore rules or the git index change, or
    a file appears that the listing cannot know about."""
    if language_of(path) is None:
        return False
    resolved = _resolved(os.fspath(root))
    relative = _relative_to(os.path.abspath(path), resolved) or _relative_to(os.path.abspath(path),
                                                                              os.path.abspath(root))
    rules = _user_rules(tuple(include), tuple(exclude))
    if relative is None or rules.excluded(relative) or _through_link(resolved, relative):
        return False
    on_disk = os.path.lexists(os.path.join(resolved, relative))
    if on_disk and not _is_regular(os.path.join(resolved, relative)):
        return False
    if rules.forced(relative):
        return True
    listing = git_listing(Path(resolved), _worth_listing) if on_disk else None  # git lists only files on disk
    if listing is not None:
        try:
            return listing.lists(relative)
        except GitError as error:
            logger.warning("evaluating ignore rules without git: %s", error)
            forget(Path(resolved))
    ignore = GitignoreRules(Path(resolved))
    return not _ignored_on_the_way(relative, lambda key: ignore.ignored(key.rstrip("/"), key.endswith("/")))


@lru_cache(maxsize=64)
def _resolved(root: str) -> str:
    return os.path.realpath(root)


def _relative_to(path: str, root: str) -> str | None:
    """``path`` relative to ``root``, with "/" separators, or None when it is not below it."""
    if not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return path[len(root.rstrip(os.sep)) + 1:].replace(os.sep, "/")


def _is_regular(path: str) -> bool:
    """A regular file itself, not a symlink to one, nor a FIFO, socket or device."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _through_link(root: str, relative: str) -> bool:
    """Whether a folder on the way from ``root`` to ``relative`` (itself too, when it ends
    with "/") is a symlink: discovery never enters one."""
    current = root
    for part in relative.split("/")[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            return True
    return False


def _worth_listing(name: str) -> bool:
    """The names a cached git listing keeps: source files, and the rules files whose
    presence it must remember."""
    return language_of(name) is not None or name.rpartition("/")[2] == ".gitignore"


def _ignored_on_the_way(relative: str, skipped) -> bool:
    """Whether ``relative`` ("name/" for a folder) or a folder on its way is ``skipped``
    (git does not look inside an ignored folder, so nothing below one is re-included)."""
    parts = relative.rstrip("/").split("/")
    for depth in range(1, len(parts) + 1):
        key = "/".join(parts[:depth])
        if skipped(key + "/" if depth < len(parts) or relative.endswith("/") else key):
            return True
    return False
