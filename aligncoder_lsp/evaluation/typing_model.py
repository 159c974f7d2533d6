"""The simulated programmer of the typing benchmark: which code is typed, at what pace, and
which suggestions are accepted.

Spans are function bodies, blocks and single statements of real files (whole lines, found
with tree-sitter). A span is typed back keystroke by keystroke: one character at a time,
except Enter, which brings the next line's indentation with it as an editor's auto-indent
does. All randomness comes from a seeded :class:`random.Random`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from tree_sitter import Node

from aligncoder_lsp.index.symbols import parse
from aligncoder_lsp.workspace.files import SourceFile, discover, language_of, read_source

KINDS = ("body", "block", "line")
MAX_FILE_BYTES = 1_000_000
_BODY_PARENTS = {"function_definition", "method_declaration", "constructor_declaration"}
_STATEMENT_LISTS = {"block", "constructor_body", "module"}
_NEWLINE_AND_INDENT = re.compile(r"\n[ \t]*")
_INDENT = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Span:
    """Lines ``start`` up to ``end`` (0-based, exclusive) of a file, cut into the text before
    the cursor (``prefix``, ending in the first line's indentation), the text to type
    (``target``) and the text after it (``suffix``)."""

    relative: str
    language: str
    kind: str
    start: int
    end: int
    prefix: str
    target: str
    suffix: str

    @classmethod
    def cut(cls, relative: str, language: str, kind: str, text: str, start: int, end: int) -> Span:
        lines = text.split("\n")
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip(" \t"))]
        prefix = "".join(line + "\n" for line in lines[:start]) + indent
        target = "\n".join(lines[start:end])[len(indent):]
        suffix = "".join("\n" + line for line in lines[end:])
        return cls(relative, language, kind, start, end, prefix, target, suffix)


def candidate_spans(text: str, language: str, max_lines: int = 15) -> dict[str, list[tuple[int, int]]]:
    """(start, end) line ranges of every function body, block and single-line statement of
    ``text`` that fills whole lines and has at most ``max_lines`` lines, by kind."""
    lines = text.encode("utf-8").split(b"\n")
    found: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}

    def add(kind: str, first: Node, last: Node) -> None:
        start, end = first.start_point.row, last.end_point.row + 1
        if (end - start <= max_lines and not lines[start][: first.start_point.column].strip()
                and not lines[end - 1][last.end_point.column:].strip()):
            found[kind].append((start, end))

    pending = [parse(text, language)]
    while pending:
        node = pending.pop()
        pending.extend(node.named_children)
        if node.type not in _STATEMENT_LISTS:
            continue
        statements = [child for child in node.named_children if "comment" not in child.type]
        parent = node.parent.type if node.parent is not None else ""
        if statements and node.type != "module" and "class" not in parent:
            add("body" if parent in _BODY_PARENTS else "block", statements[0], statements[-1])
        for statement in statements:
            is_statement = statement.type.endswith("statement") or statement.type == "local_variable_declaration"
            if is_statement and statement.start_point.row == statement.end_point.row:
                add("line", statement, statement)
    return {kind: sorted(set(spans)) for kind, spans in found.items()}


def sample_spans(root: Path, count: int, rng: random.Random, max_lines: int = 15) -> list[Span]:
    """``count`` spans from distinct files under ``root``, kinds taken in turn (a file
    without the wanted kind gives one of the kinds it has)."""
    root = root.resolve()
    files = sorted(discover(root))
    rng.shuffle(files)
    spans: list[Span] = []
    for path in files:
        if len(spans) == count:
            break
        source = read_source(path, MAX_FILE_BYTES)
        if not isinstance(source, SourceFile):
            continue
        language = language_of(path)
        candidates = {kind: found for kind, found in candidate_spans(source.text, language, max_lines).items() if found}
        if not candidates:
            continue
        wanted = KINDS[len(spans) % len(KINDS)]
        kind = wanted if wanted in candidates else rng.choice(sorted(candidates))
        start, end = rng.choice(candidates[kind])
        spans.append(Span.cut(path.relative_to(root).as_posix(), language, kind, source.text, start, end))
    return spans


def next_keystroke(line_before: str, rest: str) -> str:
    """The text one keystroke adds: Enter with the next line's indentation, the rest of an
    indentation at a line start, or one character."""
    if rest.startswith("\n"):
        return _NEWLINE_AND_INDENT.match(rest).group()
    if not line_before.strip() and (indent := _INDENT.match(rest)):
        return indent.group()
    return rest[:1]


def keystrokes(line_before: str, target: str) -> list[str]:
    """The keystrokes that type ``target`` after ``line_before`` without any suggestion."""
    keys = []
    while target:
        key = next_keystroke(line_before, target)
        keys.append(key)
        target = target[len(key):]
        line_before = (line_before + key).rpartition("\n")[2]
    return keys


@dataclass(frozen=True)
class Pace:
    """Seconds between the keystrokes of a fluent programmer: quick inside words, a pause at
    word ends and punctuation, a longer one at the start of a line (after Enter)."""

    in_word_median: float = 0.12
    in_word_sigma: float = 0.35
    word_end: tuple[float, float] = (0.3, 0.9)
    line_start: tuple[float, float] = (0.8, 2.0)
    debounce: float = 0.15
    """Idle time after a keystroke before the editor asks for an inline completion."""

    def pause(self, line_before: str, rest: str, rng: random.Random) -> float:
        """Idle time before the next keystroke, the cursor's line reading ``line_before``
        and ``rest`` still to type."""
        if not line_before.strip():
            return rng.uniform(*self.line_start)
        last, following = line_before[-1], rest[:1]
        if (_is_word(last) and not _is_word(following)) or not (_is_word(last) or last.isspace()):
            return rng.uniform(*self.word_end)
        return rng.lognormvariate(math.log(self.in_word_median), self.in_word_sigma)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def accepted_text(suggestion: str, rest: str) -> str:
    """What the user takes with Tab: the whole suggestion when all of it is what comes next,
    else its first line when that is; nothing otherwise."""
    if suggestion.strip() and rest.startswith(suggestion):
        return suggestion
    first_line = suggestion.split("\n", 1)[0]
    if first_line.strip() and rest.startswith(first_line):
        return first_line
    return ""
