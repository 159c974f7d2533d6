"""Prompt layout: repository context as comments, the current file's earlier definitions,
then the code before the cursor.

The context comes first and the prefix last, so that consecutive requests in one file share
a long token prefix (the KV cache is reused) whenever the context did not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

COMMENT = {"python": "#", "java": "//"}

CONTEXT_HEADER = "Code from other files of this repository:"

FILE_HEADER = "Definitions earlier in this file:"


class RenderedContext(str):
    """A context block as the prompt shows it, with the (display path, text) pieces it shows
    (for an engine that lays repository context out itself: llama.cpp's ``/infill``)."""

    pieces: tuple[tuple[str, str], ...]

    def __new__(cls, text: str, pieces: list[tuple[str, str]]) -> RenderedContext:
        block = super().__new__(cls, text)
        block.pieces = tuple(pieces)
        return block


def render_context(snippets: list[tuple[str, str]], language: str) -> RenderedContext:
    """``snippets`` as (display path, text) pairs rendered as a comment block."""
    lines = [line for path, text in snippets for line in [f"--- {path}", *text.split("\n")]]
    return RenderedContext(_comment_block(CONTEXT_HEADER, lines, language) if snippets else "", snippets)


def render_file_context(signatures: list[str], language: str) -> str:
    """Signatures of the current file's definitions as a comment block."""
    return _comment_block(FILE_HEADER, [line for text in signatures for line in text.split("\n")],
                          language) if signatures else ""


def _comment_block(header: str, lines: list[str], language: str) -> str:
    mark = COMMENT.get(language, "#")
    return "\n".join(f"{mark} {line}".rstrip() for line in [header, *lines]) + "\n\n"


@dataclass(frozen=True)
class ContextPiece:
    """A candidate for the context block: its path as shown and its text as the prompt
    would show it (a code snippet with the lines that follow it, or a signature)."""

    path: str
    text: str
    dependency: bool = False


PIECE_OVERHEAD = 8
"""Tokens a piece costs beyond its text (its path line and comment marks)."""


def fit_context(pieces: Iterable[ContextPiece], budget: int, limit: int,
                count: Callable[[str], int]) -> list[tuple[int, ContextPiece]]:
    """The pieces, best first, that fit ``budget`` tokens, at most ``limit`` of them, as
    (position in ``pieces``, piece as shown).

    Dependency signatures take at most a third of the budget (a long one is cut to its
    head), so that code snippets always keep the rest. ``pieces`` is read lazily and only
    as far as needed.
    """
    chosen: list[tuple[int, ContextPiece]] = []
    used = dependency_used = 0
    for position, piece in enumerate(pieces):
        if len(chosen) == limit:
            break
        text = piece.text
        if piece.dependency:
            allowed = min(budget // 3 - dependency_used, budget - used) - PIECE_OVERHEAD
            text = head_within(text, allowed, count) if allowed > 0 else ""
            if not text.strip():
                continue
        cost = count(text) + PIECE_OVERHEAD
        if used + cost > budget:
            continue
        used += cost
        dependency_used += cost if piece.dependency else 0
        chosen.append((position, ContextPiece(piece.path, text, piece.dependency)))
    return chosen


def tail_within(text: str, budget: int, count: Callable[[str], int], granularity: int = 16) -> str:
    """A suffix of ``text`` made of whole lines that fits ``budget`` tokens.

    The first line kept is a multiple of ``granularity`` in the file, so the window's start
    (and with it the prompt's token prefix, whose KV cache is reused) stays put while the
    user types on at the end; a single over-long line is cut by characters.
    """
    base = max(0, len(text) - budget * 8)  # no token is shorter than 1/8 of a line's share
    if base:
        base = text.find("\n", base) + 1 or base
    starts = [base] + [match.end() + base for match in re.finditer("\n", text[base:])]
    line = _first_line_within(text, starts, budget, count)
    first_number = text.count("\n", 0, base)
    rounded = -(-(first_number + line) // granularity) * granularity - first_number
    if rounded - line > (len(starts) - line) // 2:  # rounding would lose most of a short window
        rounded = line
    window = text[starts[rounded]:]
    if count(window) > budget:  # one line longer than the whole budget
        window = window[len(window) - budget * 2:]
    return window


def head_within(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` made of whole lines that fits ``budget`` tokens ('' if none)."""
    lines = text.split("\n")
    low, high = 0, len(lines)
    while low < high:  # the most lines whose head fits
        middle = (low + high + 1) // 2
        if count("\n".join(lines[:middle])) <= budget:
            low = middle
        else:
            high = middle - 1
    return "\n".join(lines[:low])


def _first_line_within(text: str, starts: list[int], budget: int, count: Callable[[str], int]) -> int:
    """The smallest line index whose tail fits the budget (binary search on lines)."""
    low, high = 0, len(starts) - 1
    while low < high:
        middle = (low + high) // 2
        if count(text[starts[middle]:]) <= budget:
            high = middle
        else:
            low = middle + 1
    return low


def code_window(prefix: str, budget: int, count: Callable[[str], int]) -> tuple[str, str]:
    """The code before the cursor as the prompt shows it (the tail of ``prefix`` within
    ``budget`` tokens, trailing spaces after code healed off) and the healed-off spaces,
    which the model is left to produce."""
    healed, spaces = heal_trailing_space(prefix)
    return tail_within(healed, budget, count), spaces


def heal_trailing_space(prefix: str) -> tuple[str, str]:
    """Split spaces/tabs that follow code on the cursor's line off the prefix: a prompt
    ending in such a space derails small models, so the model regenerates it instead.
    Indentation alone stays: it tells the model where the next line starts (a closing
    bracket, a dedented statement), and code models tokenize it as one unit."""
    line = prefix[prefix.rfind("\n") + 1:]
    if not line.strip():
        return prefix, ""
    stripped = prefix.rstrip(" \t")
    return stripped, prefix[len(stripped):]
