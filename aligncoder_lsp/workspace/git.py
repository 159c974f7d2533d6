"""What git lists in a work tree (``git ls-files -co --exclude-standard``), cached per root.

Discovery takes a fresh listing each time. Single-path questions (is this opened or changed
file indexed?) are answered from the cached listing, which is taken again only when it may
be out of date: a rules file on the path's way (``.gitignore``, ``.git/info/exclude``,
``core.excludesFile``) or the git index changed since, or the path (or a folder on its way)
changed since, so the listing cannot have seen it. A checkout storm therefore costs one or
two listings, not one git process per path.

Submodules and nested repositories show up in a listing as folders; their files are listed
by their own git, under their own rules, and indexed like the rest of the workspace.

Limits: change times are compared with this machine's clock, so a file server whose clock
lags by more than ``CLOCK_MARGIN_NS`` can hide a new file from single-path answers until
it or its folder changes again (discovery is not affected); whether a root is in a git work
tree, and where ``core.excludesFile`` is, are looked up once per root and process.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

TIMEOUT_S = 60.0
# File timestamps come from a coarse clock that can lag time.time_ns() by a tick: anything
# stamped less than this before a listing started is treated as possibly unseen by it.
CLOCK_MARGIN_NS = 100_000_000
# "mode object stage<TAB>path" for index entries; untracked files come as bare paths
_STAGED = re.compile(rb"([0-7]{6}) [0-9a-f]{40,64} [0-3]\t(.*)", re.DOTALL)
_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
                         "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES")


class GitError(Exception):
    """git failed, timed out or is not installed."""


def run_git(directory: Path, *arguments: str) -> bytes:
    """Run git in ``directory`` (no shell, a timeout, the environment's repository
    variables dropped so they cannot point git elsewhere)."""
    executable = shutil.which("git")
    if executable is None:
        raise GitError("git is not installed")
    environment = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_VARIABLES}
    environment.update(GIT_LITERAL_PATHSPECS="1", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        done = subprocess.run([executable, "-C", str(directory), *arguments], capture_output=True,
                              env=environment, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GitError(f"git {arguments[0]} in {directory}: {error}") from error
    if done.returncode != 0:
        raise GitError(f"git {arguments[0]} in {directory}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


class GitListing:
    """The files git lists under one workspace root, relative to it, with "/" separators."""

    def __init__(self, root: Path, top: Path, git_dir: Path, rules_files: list[Path], keep):
        self.root, self.top = root, top
        self._root_text = str(root)
        # whose change makes a listing out of date (the .gitignore files inside the root
        # are looked at on the way to each path asked about)
        self._watched = [git_dir / "index", *rules_files]
        self._keep = keep
        self._lock = threading.Lock()
        self._files: set[str] | None = None
        self._nested: tuple[str, ...] = ()
        self._existed: dict[Path, bool] = {}
        self._taken_ns = 0

    def files_under(self, folder: str) -> set[str]:
        """A fresh listing of the kept files under ``folder`` ("." for the whole root),
        nested repositories included."""
        with self._lock:
            if folder == "." or self._files is None:
                self._refresh()
            if folder == ".":
                kept, nested = set(self._files), self._nested
            else:
                inside = self._nested_root_of(folder + "/")
                if inside is None:
                    kept, nested = self._list(folder)
        if folder != "." and inside is not None:  # the outer git does not look into it
            inner = _work_tree_at(self.root / inside, self._keep)
            rest = folder[len(inside) + 1:] or "."
            return {f"{inside}/{name}" for name in inner.files_under(rest)} if inner is not None else set()
        for name in nested:
            inner = _work_tree_at(self.root / name, self._keep)
            if inner is not None:
                kept |= {f"{name}/{inner_name}" for inner_name in inner.files_under(".")}
        return kept

    def lists(self, relative: str) -> bool:
        """Whether git lists the existing file ``relative`` (taking a listing only when the
        cached one may be out of date)."""
        with self._lock:
            if self._files is None or self._rules_changed(relative):
                self._refresh()
            for attempt in range(2):
                nested = self._nested_root_of(relative)
                if nested is not None:
                    break
                if relative in self._files:
                    return True
                if not self._changed_since_listing(relative):
                    return False
                if attempt == 0:
                    self._refresh()
            else:  # changed while git was listing: ask about this one file
                return relative in self._list(relative)[0]
        inner = _work_tree_at(self.root / nested, self._keep)
        return inner is not None and inner.lists(relative[len(nested) + 1:])

    def _refresh(self) -> None:
        taken_ns = time.time_ns() - CLOCK_MARGIN_NS
        existed = {path: path.exists() for path in self._watched}
        self._files, nested = self._list(".")
        self._nested = tuple(nested)
        self._existed, self._taken_ns = existed, taken_ns

    def _list(self, folder: str) -> tuple[set[str], list[str]]:
        """The kept names and the nested work trees (gitlinks of submodules, untracked
        repositories shown as "name/") under ``folder``."""
        output = run_git(self.root, "ls-files", "-z", "--stage", "--cached", "--others", "--exclude-standard",
                         "--", folder)
        kept, nested = set(), []
        for record in output.split(b"\0"):
            staged = _STAGED.fullmatch(record) if b"\t" in record else None
            name = os.fsdecode(staged.group(2) if staged else record)
            if not name:
                continue
            if name.endswith("/") or (staged and staged.group(1) == b"160000"):
                if name.rstrip("/") not in ("", "."):  # "./": the root is a submodule not checked out
                    nested.append(name.rstrip("/"))
            elif self._keep(name):
                kept.add(name)
        return kept, nested

    def _nested_root_of(self, relative: str) -> str | None:
        return next((folder for folder in self._nested if relative.startswith(folder + "/")), None)

    def _rules_changed(self, relative: str) -> bool:
        """Whether the git index or a rules file that governs ``relative`` changed since the
        listing."""
        if any(self._changed(path, existed) for path, existed in self._existed.items()):
            return True
        folders = relative.split("/")[:-1]
        for depth in range(len(folders) + 1):
            rules = "/".join([*folders[:depth], ".gitignore"])
            if self._changed(os.path.join(self._root_text, rules), rules in self._files):
                return True
        return False

    def _changed(self, path: str | Path, existed: bool) -> bool:
        try:
            return os.lstat(path).st_ctime_ns >= self._taken_ns
        except OSError:
            return existed

    def _changed_since_listing(self, relative: str) -> bool:
        """Whether the file, or a folder on its way from the root, changed since the listing
        (a folder moved in keeps its files' old timestamps, but gets a new one itself)."""
        path = os.path.join(self._root_text, relative)
        while len(path) >= len(self._root_text):
            if self._changed(path, True):
                return True
            path = os.path.dirname(path)
        return False


def forget(root: Path) -> None:
    """Drop what is known about the resolved path ``root`` (after git failed there), to
    probe it afresh."""
    with _listings_lock:
        _listings.pop(root, None)


_listings: dict[Path, GitListing | None] = {}
_listings_lock = threading.Lock()


def git_listing(root: Path, keep) -> GitListing | None:
    """The listing for the resolved path ``root``, or None when it is not inside a git work
    tree or git cannot be run (then the caller evaluates the ignore rules itself).
    ``keep(name)`` selects the names worth keeping in memory."""
    with _listings_lock:
        if root in _listings:
            return _listings[root]
    listing = _probe(root, keep)
    with _listings_lock:
        return _listings.setdefault(root, listing)


def _work_tree_at(folder: Path, keep) -> GitListing | None:
    """The listing of the repository whose top is ``folder`` (not that of an enclosing one,
    as for a submodule that is not checked out)."""
    listing = git_listing(folder, keep)
    return listing if listing is not None and listing.top == listing.root else None


def _probe(root: Path, keep) -> GitListing | None:
    try:
        lines = run_git(root, "rev-parse", "--is-inside-work-tree", "--show-toplevel", "--absolute-git-dir",
                        "--git-common-dir").decode("utf-8", "surrogateescape").splitlines()
    except GitError as error:
        logger.info("not using git for %s: %s", root, error)
        return None
    if len(lines) != 4 or lines[0] != "true":
        return None
    top, git_dir = Path(lines[1]).resolve(), Path(lines[2])
    common_dir = (root / lines[3]).resolve()
    if root != top and _ignored_by(top, root):
        logger.info("not using git for %s: the repository %s ignores it (its own rules apply)", root, top)
        return None
    try:
        above = [top / folder for folder in reversed(root.relative_to(top).parents)]
    except ValueError:
        above = []
    rules = [common_dir / "info" / "exclude", _excludes_file(root), *(folder / ".gitignore" for folder in above)]
    logger.info("listing %s with git (work tree %s)", root, top)
    return GitListing(root, top, git_dir, rules, keep)


def _ignored_by(top: Path, folder: Path) -> bool:
    """Whether the repository at ``top`` ignores ``folder`` (a workspace opened inside an
    ignored folder, such as a virtual environment's packages, is indexed by its own rules)."""
    try:
        run_git(top, "--no-literal-pathspecs", "check-ignore", "-q", "--", folder.relative_to(top).as_posix() + "/")
    except GitError:  # exit 1: not ignored (or git could not tell; then the listing decides)
        return False
    return True


def _excludes_file(root: Path) -> Path:
    try:
        configured = run_git(root, "config", "--path", "--get", "core.excludesFile").decode("utf-8", "surrogateescape")
    except GitError:
        configured = ""
    if configured.strip():
        return Path(configured.strip())
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "git" / "ignore"
