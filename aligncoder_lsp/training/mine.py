"""*mine*: self-supervised holes, shaped like the cursors of real completion requests.

A hole is a cursor in a repository file and the line-aligned text that follows it: the rest
of a line from its indentation (most), two or three lines (some), or the remainder of a
line after an identifier, ``.`` or ``(`` (a few, like CrossCodeEval cursors). Targets are
at most ``max_target_tokens`` generator tokens; blank, comment-only, import-only lines and
the inside of multi-line strings are never targets. At most one hole is cut per region of
``region_lines`` lines, and lines that use a name defined in another file of the
repository are favoured, since those are the cursors that repository context can help.
Holes are split into train and held-out by repository, never by hole.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from aligncoder_lsp.index.dependencies import DependencyGraph
from aligncoder_lsp.index.symbols import extract, skipped_lines
from aligncoder_lsp.config import Settings
from aligncoder_lsp.training.corpus import VENDORED, Repository, describe, index_settings, source_files, text_digest
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Hole, Run, RunError
from aligncoder_lsp.workspace.files import SourceFile, language_of

logger = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9_]")
COMMENT_STARTS = {"python": ("#",), "java": ("//", "/*", "*")}


@dataclass
class MineSettings:
    holes: int = 500
    """Holes to mine over all repositories."""
    seed: int = 0
    held_out: float = 0.2
    """Share of the repositories (at least one when there are two or more) held out."""
    held_out_repos: list[str] = field(default_factory=list)
    """Repositories to hold out by name (instead of drawing them)."""
    region_lines: int = 10
    max_target_tokens: int = 32
    shapes: dict[str, float] = field(default_factory=lambda: {"line": 0.7, "lines": 0.15, "mid-line": 0.15})
    cross_file_weight: float = 3.0
    """How much more likely a line that uses a name of another file is to be chosen."""
    min_line: int = 2
    """Holes start at this 0-based line or later (some code before the cursor)."""


@dataclass(frozen=True)
class Cut:
    line: int
    column: int
    target: str
    shape: str
    cross_file: bool


def code_lines(text: str, language: str) -> list[int]:
    """0-based lines that can start a target: not blank, not only a comment, not part of an
    import, not inside a multi-line string or comment."""
    comments = COMMENT_STARTS.get(language, ("#",))
    try:
        skipped = skipped_lines(text, language)
    except Exception:  # a grammar problem must not stop mining; keep every line
        logger.exception("could not find the strings and imports of a %s file", language)
        skipped = set()
    return [number for number, line in enumerate(text.split("\n"))
            if line.strip() and not line.strip().startswith(comments) and number not in skipped]


def cuts_of_file(text: str, language: str, foreign_names: set[str], settings: MineSettings,
                 count: Callable[[str], int], rng: random.Random) -> list[Cut]:
    """At most one cut per region of the file."""
    lines = text.split("\n")
    eligible = [n for n in code_lines(text, language) if n >= settings.min_line]
    by_region: dict[int, list[int]] = {}
    for number in eligible:
        by_region.setdefault(number // settings.region_lines, []).append(number)
    shapes, shape_weights = list(settings.shapes), list(settings.shapes.values())
    eligible_set = set(eligible)
    cuts = []
    for region in sorted(by_region):
        numbers = by_region[region]
        uses = [bool(foreign_names.intersection(_IDENTIFIER.findall(lines[n]))) for n in numbers]
        weights = [settings.cross_file_weight if use else 1.0 for use in uses]
        choice = rng.choices(range(len(numbers)), weights)[0]
        number = numbers[choice]
        shape = rng.choices(shapes, shape_weights)[0]
        cut = _cut(lines, number, shape, eligible_set, settings.max_target_tokens, count, rng)
        if cut is None and shape != "line":
            cut = _cut(lines, number, "line", eligible_set, settings.max_target_tokens, count, rng)
        if cut is not None:
            cuts.append(Cut(number, cut[0], cut[1], cut[2], uses[choice]))
    return cuts


def _cut(lines: list[str], number: int, shape: str, eligible: set[int], max_tokens: int,
         count: Callable[[str], int], rng: random.Random) -> tuple[int, str, str] | None:
    """(column, target, shape) of one cut at line ``number``, or None when none fits."""
    line = lines[number].rstrip()
    indent = len(line) - len(line.lstrip())
    if shape == "mid-line":
        stops = [p for p in range(indent + 1, len(line))
                 if (line[p - 1] in ".(" or (_WORD.match(line[p - 1]) and not _WORD.match(line[p])))
                 and _WORD.search(line[p:]) and "#" not in line[:p] and "//" not in line[:p]]
        if not stops:
            return None
        column = rng.choice(stops)
        target = line[column:]
        return (column, target, shape) if count(target) <= max_tokens else None
    if shape == "lines":
        wanted = rng.choice((2, 3))
        following = [number]
        while len(following) < wanted and following[-1] + 1 in eligible:
            following.append(following[-1] + 1)
        while len(following) >= 2:
            target = "\n".join([lines[number][indent:]] + [lines[n] for n in following[1:]]).rstrip()
            if count(target) <= max_tokens:
                return indent, target, shape
            following.pop()
        return None
    target = line[indent:]
    return (indent, target, "line") if count(target) <= max_tokens else None


def foreign_names_by_file(files: dict[str, SourceFile]) -> dict[str, set[str]]:
    """For each file, the names it imports that another file of the repository defines."""
    graph = DependencyGraph()
    languages = {}
    for relative, source in files.items():
        language = language_of(relative)
        if language is None:
            continue
        try:
            graph.set_file(relative, extract(source.text, language))
            languages[relative] = language
        except Exception:  # one odd file must not stop mining
            logger.exception("could not extract the symbols of %s", relative)
    names: dict[str, set[str]] = {}
    for relative, language in languages.items():
        try:
            found = graph.dependencies(relative, files[relative].text, language)
        except Exception:
            logger.exception("could not resolve the imports of %s", relative)
            found = []
        names[relative] = {snippet.symbol for snippet in found if snippet.symbol}
    return names


def mine_repository(name: str, files: dict[str, SourceFile], settings: MineSettings, count: Callable[[str], int],
                    skip_digests: set[str], rng: random.Random) -> list[Hole]:
    """Every cut of the repository's files (one per region), as holes (split decided later)."""
    foreign = foreign_names_by_file(files)
    holes = []
    for relative in sorted(files):
        text = files[relative].text
        language = language_of(relative)
        if language is None:
            continue
        digest = text_digest(text)
        if not text.strip():
            continue
        if digest in skip_digests:
            logger.info("not mining %s/%s: the same text is elsewhere in the corpus or excluded", name, relative)
            continue
        skip_digests.add(digest)
        starts = [0]
        for line in text.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        for cut in cuts_of_file(text, language, foreign.get(relative, set()), settings, count, rng):
            offset = starts[cut.line] + cut.column
            holes.append(Hole(f"{name}/{relative}@{offset}", name, relative, cut.line, cut.column, offset,
                              cut.target, cut.shape, cut.cross_file, "train"))
    return holes


def choose(pools: dict[str, list[Hole]], settings: MineSettings, rng: random.Random) -> list[Hole]:
    """``settings.holes`` holes spread over repositories (quotas grow with the square root
    of a repository's size), favouring cross-file holes within each."""
    quota = _quotas({name: len(pool) for name, pool in pools.items()}, settings.holes)
    chosen = []
    for name in sorted(pools):
        pool = pools[name]
        # weighted sampling without replacement (Efraimidis-Spirakis keys)
        keyed = sorted(pool, key=lambda hole: -rng.random() ** (
            1 / (settings.cross_file_weight if hole.cross_file else 1.0)))
        chosen.extend(keyed[: quota[name]])
    return chosen


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    quota = {name: 0 for name in sizes}
    left = min(total, sum(sizes.values()))
    while left > 0:
        open_ = {name: math.sqrt(size) for name, size in sizes.items() if quota[name] < size}
        share = sum(open_.values())
        given = 0
        for name in sorted(open_):
            extra = min(sizes[name] - quota[name], max(1, int(left * open_[name] / share)), left - given)
            quota[name] += extra
            given += extra
            if given == left:
                break
        left -= given
    return quota


def held_out_names(names: list[str], settings: MineSettings) -> set[str]:
    """The held-out repositories: those named, or a seeded draw of ``held_out`` of them."""
    if settings.held_out_repos:
        unknown = set(settings.held_out_repos) - set(names)
        if unknown:
            logger.warning("held-out repositories not in the corpus: %s", ", ".join(sorted(unknown)))
        return set(settings.held_out_repos) & set(names)
    if len(names) < 2:
        logger.warning("one repository: no held-out split (give two or more repositories)")
        return set()
    wanted = min(len(names) - 1, max(1, round(settings.held_out * len(names))))
    return set(random.Random(f"held-out:{settings.seed}").sample(sorted(names), wanted))


def assign_split(holes: list[Hole], held_out: set[str]) -> list[Hole]:
    return [Hole(**{**hole.to_json(), "split": "held-out" if hole.repo in held_out else "train"}) for hole in holes]


def describe_holes(holes: list[Hole]) -> dict:
    summary: dict = {"total": len(holes), "by_split": {}, "by_shape": {}, "cross_file": 0}
    for hole in holes:
        summary["by_split"][hole.split] = summary["by_split"].get(hole.split, 0) + 1
        summary["by_shape"][hole.shape] = summary["by_shape"].get(hole.shape, 0) + 1
        summary["cross_file"] += hole.cross_file
    return summary



def run_mine(run: Run, repositories: list[Repository], settings: Settings, mine_settings: MineSettings,
             count: Callable[[str], int], exclude_like: list[Repository] = (), generator: str = "") -> dict:
    """Mine the holes of a run and write its manifest; returns the holes' summary."""
    if any((run.folder / phase).exists() for phase in (CANDIDATES, SCORES)):
        raise RunError(f"{run.folder} already has candidates or scores of its holes; mine into a new --out folder")
    rng = random.Random(mine_settings.seed)
    exclude = list(VENDORED)
    indexing = index_settings(settings.index, exclude)
    skip_digests: set[str] = set()
    for other in exclude_like:  # e.g. benchmark snapshots: the same file text is never a target
        with other.open() as root:
            skip_digests.update(text_digest(source.text) for _, source in source_files(root, indexing))
    excluded_files = len(skip_digests)
    pools: dict[str, list[Hole]] = {}
    described = []
    for repository in repositories:
        with repository.open() as root:
            files = dict(source_files(root, indexing))
            entry = describe(repository, root)
            entry["files"] = {relative: text_digest(source.text) for relative, source in sorted(files.items())}
            described.append(entry)
            pools[repository.name] = mine_repository(repository.name, files, mine_settings, count, skip_digests, rng)
            logger.info("mine: %s: %d files, %d candidate holes", repository.name, len(files),
                        len(pools[repository.name]))
    held_out = held_out_names(sorted(pools), mine_settings)
    holes = assign_split(choose(pools, mine_settings, rng), held_out)
    holes.sort(key=lambda hole: (hole.repo, hole.path, hole.offset))
    for entry in described:
        entry["split"] = "held-out" if entry["name"] in held_out else "train"
        entry["holes"] = sum(1 for hole in holes if hole.repo == entry["name"])
    summary = describe_holes(holes)
    run.folder.mkdir(parents=True, exist_ok=True)
    run.write_holes(holes)
    run.write_manifest({
        "repositories": described,
        "exclude": exclude,
        "excluded_like": [str(other.source) for other in exclude_like],
        "excluded_file_texts": excluded_files,
        "generator": generator,
        "mine": {key: value for key, value in vars(mine_settings).items()},
        "holes": summary,
    })
    return summary
