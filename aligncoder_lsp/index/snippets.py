"""The unit of retrieval."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snippet:
    """A piece of a workspace file: ``lines [start, end)`` of ``path`` (0-based)."""

    path: str
    start: int
    end: int
    text: str
    kind: str = "base"
    """``base`` (a Split-Aggregate block) or ``dependency`` (a signature the file imports)."""
    symbol: str = ""
    """The defined name, for dependency snippets."""

    def location(self) -> str:
        return f"{self.path}:{self.start + 1}-{self.end}"
