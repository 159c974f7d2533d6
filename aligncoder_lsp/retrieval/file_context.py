"""The current file's far context: signatures of its definitions that lie before the code
window of the prompt (the enclosing class's members, module functions and constants), so
that the model sees what the file defines beyond the window.

Only the text before the window is parsed: nothing at or after the cursor is looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from aligncoder_lsp.index.symbols import Definition, extract
from aligncoder_lsp.models.prompts import head_within, render_file_context


@dataclass(frozen=True)
class FileContext:
    block: str
    """The rendered comment block ('' when nothing fits or nothing lies before the window)."""
    definitions: tuple[Definition, ...]
    """The definitions shown, in file order (a long one may be shown cut to its head)."""


def file_context(before_window: str, language: str, budget: int, count: Callable[[str], int]) -> FileContext:
    """The definitions of ``before_window`` nearest to the window that fit ``budget`` tokens,
    shown in file order."""
    if budget <= 0 or not before_window.strip():
        return FileContext("", ())
    chosen: list[tuple[Definition, str]] = []
    used = count(render_file_context(["x"], language))  # the header's cost
    for definition in _definitions(before_window, language):  # nearest first
        allowed = budget - used
        if allowed <= 0:
            break
        text = definition.signature
        cost = count(text) + 1
        if cost > allowed:  # a long class: its head (header and first members)
            text = head_within(text, allowed - 1, count)
            if not text.strip():
                continue
            cost = count(text) + 1
        used += cost
        chosen.append((definition, text))
    chosen.sort(key=lambda item: item[0].start)
    return FileContext(render_file_context([text for _, text in chosen], language),
                       tuple(definition for definition, _ in chosen))


@lru_cache(maxsize=16)
def _definitions(text: str, language: str) -> tuple[Definition, ...]:
    """Top-level definitions of ``text``, the last one first (the text before the window
    rarely changes while the user types in it)."""
    try:
        definitions = extract(text, language).definitions.values()
    except ValueError:  # no grammar for the language
        return ()
    return tuple(sorted(definitions, key=lambda d: -d.start))
