"""Prompt layout: repository context as comments, then the code before the cursor.

The context comes first and the prefix last, so that consecutive requests in one file share
a long token prefix (the KV cache is reused) whenever the context did not change.
"""

from __future__ import annotations

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


def tail_within(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest suffix of ``text`` made of whole lines that fits ``budget`` tokens
    (a single over-long line is cut by characters)."""
    window = text[-budget * 8:]
    if len(window) < len(text) and "\n" in window:
        window = window[window.index("\n") + 1:]
    for _ in range(8):
        used = count(window)
        if used <= budget:
            return window
        excess = int(len(window) * (used - budget) / used) + 1
        newline = window.find("\n", excess)
        window = window[newline + 1:] if newline >= 0 else window[excess:]
    return window


def heal_trailing_space(prefix: str) -> tuple[str, str]:
    """Split the trailing spaces/tabs off the prefix: prompts ending in whitespace derail
    small models, so the model regenerates them instead."""
    stripped = prefix.rstrip(" \t")
    return stripped, prefix[len(stripped):]
