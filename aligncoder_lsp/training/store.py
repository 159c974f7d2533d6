"""The files of a training run: one folder holds everything the phases produce.

``manifest.json`` (repositories, versions, licences, file hashes, settings), ``holes.jsonl.gz``
(written once by *mine*), and per-hole results appended to ``candidates/`` and ``scores/``
shard files. Appends are one line per hole, flushed and synced, so an interruption loses
at most the hole in progress; a torn last line is dropped on the next start. Every phase
skips the holes that any shard file already holds, so a run can be continued on another
machine, or with another sharding, from the same files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
HOLES = "holes.jsonl.gz"
CANDIDATES = "candidates"
SCORES = "scores"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: a deterministic share of the holes, by their id."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise ValueError(f"a shard is i/n with 0 <= i < n, not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def holds(self, hole_id: str) -> bool:
        return int(hashlib.sha1(hole_id.encode()).hexdigest()[:8], 16) % self.count == self.index

    @property
    def file_name(self) -> str:
        return f"shard-{self.index}-of-{self.count}.jsonl"


@dataclass(frozen=True)
class Hole:
    """A self-supervised completion cursor: the file's text before ``offset`` is the
    prefix, ``target`` the text that follows it. ``offset`` counts code points of the file
    as the guarded reader returns it (CRLF as LF)."""

    id: str
    repo: str
    path: str
    """Relative to the repository root, with forward slashes."""
    line: int
    column: int
    offset: int
    target: str
    shape: str
    """``line`` (rest of a line from its indentation), ``lines`` (2-3 lines) or ``mid-line``."""
    cross_file: bool
    """The target uses a name defined in another file of the repository."""
    split: str
    """``train`` or ``held-out`` (by repository, never by hole)."""

    def to_json(self) -> dict:
        return asdict(self)


class Run:
    """The output folder of one training run."""

    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def holes_path(self) -> Path:
        return self.folder / HOLES

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.folder} has no {MANIFEST}: run `train mine` first") from None
        except (OSError, ValueError) as error:
            raise RunError(f"{self.manifest_path} is unreadable: {error}") from error

    def write_manifest(self, manifest: dict) -> None:
        _write_atomically(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def write_holes(self, holes: list[Hole]) -> None:
        data = "".join(json.dumps(hole.to_json(), ensure_ascii=False) + "\n" for hole in holes)
        _write_atomically(self.holes_path, gzip.compress(data.encode("utf-8"), mtime=0))

    def holes(self, shard: Shard | None = None) -> list[Hole]:
        try:
            with gzip.open(self.holes_path, "rt", encoding="utf-8") as handle:
                holes = [Hole(**json.loads(line)) for line in handle if line.strip()]
        except FileNotFoundError:
            raise RunError(f"{self.folder} has no {HOLES}: run `train mine` first") from None
        except (OSError, ValueError, TypeError, EOFError) as error:
            raise RunError(f"{self.holes_path} is unreadable: {error}") from error
        return [hole for hole in holes if shard is None or shard.holds(hole.id)]

    def shard_file(self, phase: str, shard: Shard) -> ShardFile:
        return ShardFile(self.folder / phase / shard.file_name)

    def settle(self, phase: str, settings: dict) -> None:
        """Record the settings ``phase`` runs with; a run continued with other settings
        would mix incomparable results, so that is refused."""
        manifest = self.manifest()
        recorded = manifest.setdefault("settings", {}).get(phase)
        if recorded is None:
            manifest["settings"][phase] = settings
            self.write_manifest(manifest)
        elif recorded != settings:
            changed = sorted(key for key in set(recorded) | set(settings) if recorded.get(key) != settings.get(key))
            raise RunError(f"this run's {phase} phase ran with other settings ({', '.join(changed)}); "
                           f"use a new --out folder or the recorded settings: {json.dumps(recorded)}")

    def status(self) -> dict:
        """Holes mined, candidates made and holes scored (per shard file), and an ETA for
        the scoring left at the rate measured so far."""
        holes = self.holes()
        candidates = self.records(CANDIDATES)
        report: dict = {"holes": len(holes), "held_out": sum(1 for hole in holes if hole.split == "held-out"),
                        "candidates": sum(1 for hole in holes if hole.id in candidates), "scores": {}}
        made = [record["s"] for record in candidates.values() if isinstance(record.get("s"), (int, float))]
        if made:
            report["candidates_seconds_per_hole"] = round(sum(made) / len(made), 2)
        seconds: list[float] = []
        scored: set[str] = set()
        for path in sorted((self.folder / SCORES).glob("shard-*.jsonl")):
            records = list(ShardFile(path).read())
            report["scores"][path.name] = len(records)
            scored.update(record["hole"] for record in records)
            seconds.extend(record["s"] for record in records if isinstance(record.get("s"), (int, float)))
        report["scored"] = len(scored)
        left = len(holes) - len(scored)
        if seconds:
            report["seconds_per_hole"] = round(sum(seconds) / len(seconds), 2)
            report["eta_one_machine"] = format_duration(left * report["seconds_per_hole"])
        return report

    def records(self, phase: str) -> dict[str, dict]:
        """Every hole's record of ``phase`` from all its shard files, by hole id."""
        found: dict[str, dict] = {}
        for path in sorted((self.folder / phase).glob("shard-*.jsonl")):
            for record in ShardFile(path).read():
                found[record["hole"]] = record
        return found


class RunError(Exception):
    """A run folder is missing or damaged; the message is for the user."""


class ShardFile:
    """Per-hole JSON records appended to one file."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> Iterator[dict]:
        """The complete records; a torn or corrupt line is logged and skipped."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line (no newline)")
                    record = json.loads(line)
                    if not isinstance(record, dict) or "hole" not in record:
                        raise ValueError("not a hole record")
                except ValueError as error:
                    logger.warning("%s:%d: skipping a damaged record (%s); its hole will be redone",
                                   self.path, number, error)
                    continue
                yield record

    def repair(self) -> None:
        """Cut a torn last line off, so that appends start on a fresh line."""
        try:
            with self.path.open("rb+") as handle:
                data = handle.read()
                if data and not data.endswith(b"\n"):
                    handle.truncate(data.rfind(b"\n") + 1)
                    logger.warning("%s: cut a torn last line", self.path)
        except FileNotFoundError:
            pass

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


class Progress:
    """Log lines every ``every`` holes: done/total, holes per minute, ETA."""

    def __init__(self, phase: str, total: int, every: int = 10, already: int = 0):
        self.phase, self.total, self.every = phase, total, max(1, every)
        self.already = already
        self.done = 0
        self.started = time.monotonic()

    def tick(self) -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            logger.info("%s", self.line())

    def rate(self) -> float:
        """Holes per minute in this process."""
        elapsed = time.monotonic() - self.started
        return 60 * self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = format_duration(60 * left / rate) if rate > 0 else "unknown"
        return (f"{self.phase}: {self.already + self.done}/{self.already + self.total} holes "
                f"({rate:.2f} holes/min, ETA {eta})")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def group_by_file(holes: Iterable[Hole]) -> dict[str, dict[str, list[Hole]]]:
    """Holes by repository, then by file, each file's holes in text order."""
    grouped: dict[str, dict[str, list[Hole]]] = {}
    for hole in holes:
        grouped.setdefault(hole.repo, {}).setdefault(hole.path, []).append(hole)
    for files in grouped.values():
        for holes_of_file in files.values():
            holes_of_file.sort(key=lambda hole: hole.offset)
    return grouped
