"""The one guarded reader for source files, and workspace discovery.

Every file the index sees passes through :func:`read_source`: a size cap, a binary sniff,
strict UTF-8 decoding, and tolerance of files that vanish while being read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pathspec

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


@dataclass(frozen=True)
class SourceFile:
    path: Path
    text: str
    mtime_ns: int
    size: int


def language_of(path: str | Path) -> str | None:
    return LANGUAGES.get(Path(path).suffix.lower())


def read_source(path: Path, max_bytes: int) -> SourceFile | Skip:
    """Read a source file, or say why it cannot be indexed."""
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            return Skip.TOO_LARGE
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return Skip.VANISHED
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
    return SourceFile(path, text.replace("\r\n", "\n"), stat.st_mtime_ns, stat.st_size)


class IgnoreRules:
    """gitignore semantics for one workspace root (nested .gitignore files included)."""

    def __init__(self, root: Path, include: list[str], exclude: list[str]):
        self.root = root
        self.include = pathspec.GitIgnoreSpec.from_lines(include)
        self.exclude = pathspec.GitIgnoreSpec.from_lines(ALWAYS_EXCLUDED + exclude)
        self._nested: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def load_gitignore(self, directory: Path) -> None:
        gitignore = directory / ".gitignore"
        if not gitignore.is_file():
            return
        try:
            lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        prefix = directory.relative_to(self.root).as_posix()
        self._nested.append(("" if prefix == "." else prefix + "/", pathspec.GitIgnoreSpec.from_lines(lines)))

    def ignored(self, relative: str, is_dir: bool) -> bool:
        key = relative + "/" if is_dir else relative
        if self.include.match_file(key):
            return False
        if self.exclude.match_file(key):
            return True
        for prefix, spec in self._nested:
            if key.startswith(prefix) and spec.match_file(key[len(prefix):]):
                return True
        return False


def discover(root: Path, include: list[str] = (), exclude: list[str] = (), under: Path | None = None) -> Iterator[Path]:
    """Yield the Python and Java files under ``root`` (or only those under its subfolder
    ``under``) that are not ignored.

    Directory symlinks are never followed (no loops, nothing outside the workspace); file
    symlinks are kept only when they resolve inside the root.
    """
    root = root.resolve()
    rules = IgnoreRules(root, list(include), list(exclude))
    start = root
    if under is not None:
        if _ignored_on_the_way(rules, root, under, is_dir=True):
            return
        start = under
    for directory, dirnames, filenames in os.walk(start, followlinks=False, onerror=_log_walk_error):
        current = Path(directory)
        rules.load_gitignore(current)
        relative_dir = current.relative_to(root).as_posix()
        base = "" if relative_dir == "." else relative_dir + "/"
        dirnames[:] = sorted(
            d for d in dirnames
            if not (current / d).is_symlink() and not rules.ignored(base + d, is_dir=True)
        )
        for name in sorted(filenames):
            path = current / name
            if language_of(name) is None or rules.ignored(base + name, is_dir=False):
                continue
            if path.is_symlink() and not _resolves_inside(path, root):
                logger.info("skipping %s: symlink leaves the workspace", path)
                continue
            yield path


def is_indexable(root: Path, path: Path, include: list[str] = (), exclude: list[str] = ()) -> bool:
    """Whether ``path`` (a file under ``root``) is a source file discovery would yield."""
    if language_of(path) is None:
        return False
    rules = IgnoreRules(root.resolve(), list(include), list(exclude))
    if _ignored_on_the_way(rules, root.resolve(), path, is_dir=False):
        return False
    return not path.is_symlink() or _resolves_inside(path, root.resolve())


def _ignored_on_the_way(rules: IgnoreRules, root: Path, target: Path, is_dir: bool) -> bool:
    """Load the .gitignore files from ``root`` down to ``target`` and check every step."""
    relative = target.relative_to(root)
    current = root
    for number, part in enumerate(relative.parts):
        rules.load_gitignore(current)
        current = current / part
        last = number == len(relative.parts) - 1
        step_is_dir = is_dir or not last
        if rules.ignored(current.relative_to(root).as_posix(), is_dir=step_is_dir):
            return True
        if step_is_dir and current.is_symlink():
            return True
    return False


def _resolves_inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _log_walk_error(error: OSError) -> None:
    logger.info("skipping %s: %s", error.filename, error.strerror)
