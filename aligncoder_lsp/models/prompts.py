"""Prompt layout: repository context as comments, then the code before the cursor.

The context comes first and the prefix last, so that consecutive requests in one file share
a long token prefix (the KV cache is reused) whenever the context did not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable

COMMENT = {"python": "#", "java": "//"}

CONTEXT_HEADER = "Code from other files of this repository:"


def render_context(snippets: list[tuple[str, str]], language: str) -> str:
    """``snippets`` as (display path, text) pairs rendered as a comment block."""
    if not snippets:
        return ""
    mark = COMMENT.get(language, "#")
    out = [f"{mark} {CONTEXT_HEADER}"]
    for path, text in snippets:
        out.append(f"{mark} --- {path}")
        out.extend(f"{mark} {line}".rstrip() for line in text.split("\n"))
    return "\n".join(out) + "\n\n"


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
