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

    def location(self) -> str:
        return f"{self.path}:{self.start + 1}-{self.end}"
