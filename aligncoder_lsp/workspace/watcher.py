"""Filesystem events -> batches of changed paths, with a trailing debounce and a maximum wait.

A ``git checkout`` that touches thousands of files produces one batch once the tree is
quiet (or the maximum wait has passed), so the index applies it once, consistently.

A change to ignore rules is reported as the folder the rules govern (the folder of a
``.gitignore``, the repository root for ``.git/info/exclude``), so that the index discovers
that folder again; other changes inside ``.git`` are not reported. Not watched: the global
``core.excludesFile``, the ``info/exclude`` of a linked work tree (it lives in the main
repository), and the git index (a file that is tracked, ignored and then untracked stays
indexed until its folder changes again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

logger = logging.getLogger(__name__)

Batch = Callable[[set[Path]], None]


class Debouncer:
    """Collects items; calls ``flush(items)`` after ``quiet`` seconds without new ones, or
    ``max_wait`` seconds after the first one, whichever comes first."""

    def __init__(self, flush: Batch, quiet: float = 0.1, max_wait: float = 3.0):
        self.flush, self.quiet, self.max_wait = flush, quiet, max_wait
        self._items: set[Path] = set()
        self._first = self._last = 0.0
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="debounce", daemon=True)
        self._thread.start()

    def add(self, items: set[Path]) -> None:
        with self._condition:
            now = time.monotonic()
            if not self._items:
                self._first = now
            self._items |= items
            self._last = now
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._items and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                due = min(self._last + self.quiet, self._first + self.max_wait)
                delay = due - time.monotonic()
                if delay > 0:
                    self._condition.wait(delay)
                    continue
                items, self._items = self._items, set()
            try:
                self.flush(items)
            except Exception:  # a failing consumer must not stop the watcher
                logger.exception("applying %d file changes failed", len(items))


def paths_to_check(path: Path) -> set[Path]:
    """What a change of ``path`` asks the index to look at again."""
    if path.name == ".gitignore":
        return {path.parent}
    if ".git" in path.parts:
        repository = Path(*path.parts[:len(path.parts) - 1 - path.parts[::-1].index(".git")])
        return {repository} if path.relative_to(repository).parts == (".git", "info", "exclude") else set()
    return {path}


class _Handler(FileSystemEventHandler):
    def __init__(self, debouncer: Debouncer):
        self.debouncer = debouncer

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = paths_to_check(Path(str(event.src_path)))
        if getattr(event, "dest_path", ""):
            paths |= paths_to_check(Path(str(event.dest_path)))
        if paths:
            self.debouncer.add(paths)


class WorkspaceWatcher:
    """Watches workspace roots recursively and hands over debounced batches of paths."""

    def __init__(self, roots: list[Path], on_batch: Batch, quiet: float = 0.1, max_wait: float = 3.0):
        self.debouncer = Debouncer(on_batch, quiet, max_wait)
        self.observer = Observer()
        handler = _Handler(self.debouncer)
        for root in roots:
            self.observer.schedule(handler, str(root), recursive=True)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.debouncer.stop()
        self.observer.join(timeout=5)
