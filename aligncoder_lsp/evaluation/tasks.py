"""Benchmark tasks (RepoEval format) and honest workspaces for them.

Honesty: nothing at or after a task's cursor may enter the index or the prompt. A task's
workspace is the repository with the target file reduced to the task's prefix; this is
checked before every task (:func:`check_honest`), not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aligncoder_lsp.index.workspace_index import WorkspaceIndex


class HonestyViolation(RuntimeError):
    """The index holds text at or after a task's cursor: the run would measure a leak."""


@dataclass(frozen=True)
class Task:
    id: str
    repo: str
    file_path: str
    level: str
    prefix: str
    suffix: str
    groundtruth: str
    language: str = "python"
    canary: str = ""
    """A token that occurs only at or after the cursor; a run stops if the index holds it."""

    @property
    def cursor(self) -> tuple[int, int]:
        """0-based (line, column in code points) of the cursor: the end of the prefix."""
        lines = self.prefix.split("\n")
        return len(lines) - 1, len(lines[-1])


def load_tasks(path: Path, limit: int | None = None, repo: str | None = None) -> list[Task]:
    tasks = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            if repo and record["repo"] != repo:
                continue
            tasks.append(Task(
                id=record["id"], repo=record["repo"], file_path=record["file_path"],
                level=record.get("level", "line"), prefix=record["prefix"], suffix=record["suffix"],
                groundtruth=record["groundtruth"], language=record.get("language", "python"),
                canary=record.get("canary", ""),
            ))
            _check_canary(tasks[-1])
    return tasks[:limit] if limit else tasks


def _check_canary(task: Task) -> None:
    """A canary proves a leak only if it occurs after the cursor and nowhere before it."""
    if not task.canary:
        return
    if task.canary in task.prefix:
        raise ValueError(f"task {task.id}: its canary {task.canary!r} occurs before the cursor")
    if task.canary not in task.groundtruth + task.suffix:
        raise ValueError(f"task {task.id}: its canary {task.canary!r} does not occur after the cursor")


def materialize(repos: Path, name: str, workdir: Path) -> Path:
    """A private copy of repository ``name`` (a folder or ``name.tar.gz`` under ``repos``).

    The path returned is resolved: the index keys files by resolved paths, so a target file
    named through a symlinked ``workdir`` (/tmp on macOS) would be indexed twice, in full
    under one of its names.
    """
    workdir = workdir.resolve()
    target = workdir / name
    if target.exists():
        shutil.rmtree(target)
    folder = repos / name
    if folder.is_dir():
        shutil.copytree(folder, target, symlinks=True)
        return target
    with tarfile.open(repos / f"{name}.tar.gz") as archive:
        archive.extractall(workdir, filter="data")
    if not target.is_dir():
        raise FileNotFoundError(f"{repos / name}.tar.gz has no top folder {name}")
    return target


def reduce_to_prefix(root: Path, task: Task) -> Path:
    """Cut the task's target file on disk down to the text before the cursor."""
    path = root / task.file_path
    path.write_text(task.prefix, encoding="utf-8")
    return path


def _identity(path: str | Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _names_of(target: Path, indexed: dict) -> list[str]:
    """``target`` and every other path the index holds the same file under (symlinks)."""
    identity = _identity(target)
    others = [path for path in indexed if path != str(target) and identity is not None and _identity(path) == identity]
    return [str(target)] + others


def check_honest(index: WorkspaceIndex, target: Path, prefix: str, canary: str = "") -> None:
    """Raise :class:`HonestyViolation` unless every snippet and definition the index holds
    for ``target`` (under any of its names) lies within ``prefix``, and, given a
    ``canary``, no snippet of any file contains it."""
    indexed = index.snippets_by_path()
    prefix_lines = prefix.count("\n") + 1
    for path in _names_of(target, indexed):
        for snippet in indexed.get(path, []):
            if snippet.text not in prefix:
                raise HonestyViolation(f"{snippet.location()} is indexed but not in the task's prefix")
        for definition in index.definitions_of(path):
            if definition.end > prefix_lines:
                raise HonestyViolation(f"{path}: definition {definition.name} reaches past the task's cursor")
    if canary:
        for snippets in indexed.values():
            for snippet in snippets:
                if canary in snippet.text:
                    raise HonestyViolation(f"{snippet.location()} holds the task's canary {canary!r}")


@contextmanager
def prefix_only(index: WorkspaceIndex, target: Path, prefix: str, canary: str = "") -> Iterator[None]:
    """The index with the file ``target`` reduced to ``prefix`` under each of its names,
    checked honest; the file is indexed from disk again afterwards."""
    names = _names_of(target, index.snippets_by_path())
    for name in names:
        index.set_file(name, prefix)
    try:
        check_honest(index, target, prefix, canary)
        yield
    finally:
        for name in names:
            index.refresh_file(Path(name))
