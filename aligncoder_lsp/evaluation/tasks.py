"""Benchmark tasks (RepoEval format) and honest workspaces for them.

Honesty: nothing at or after a task's cursor may enter the index or the prompt. A task's
workspace is the repository with the target file reduced to the task's prefix.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path


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
            ))
    return tasks[:limit] if limit else tasks


def materialize(repos: Path, name: str, workdir: Path) -> Path:
    """A private copy of repository ``name`` (a folder or ``name.tar.gz`` under ``repos``)."""
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
