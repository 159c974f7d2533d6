"""Split-Aggregate chunking (RLCoder / AlignCoder base snippets)."""

from __future__ import annotations

from aligncoder_lsp.index.snippets import Snippet


def mini_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """Runs of non-blank lines as ``[start, end)`` ranges; blank lines separate them."""
    blocks: list[tuple[int, int]] = []
    start = None
    for number, line in enumerate(lines):
        if line.strip():
            if start is None:
                start = number
        elif start is not None:
            blocks.append((start, number))
            start = None
    if start is not None:
        blocks.append((start, len(lines)))
    return blocks


def split_aggregate(path: str, text: str, max_lines: int = 15) -> list[Snippet]:
    """Split at blank lines, then merge consecutive mini-blocks while the span stays within
    ``max_lines``; a mini-block longer than that is cut into ``max_lines`` pieces."""
    lines = text.split("\n")
    ranges: list[tuple[int, int]] = []
    for start, end in mini_blocks(lines):
        while end - start > max_lines:
            _append_or_merge(ranges, (start, start + max_lines), max_lines)
            start += max_lines
        _append_or_merge(ranges, (start, end), max_lines)
    return [Snippet(path, start, end, "\n".join(lines[start:end])) for start, end in ranges]


def _append_or_merge(ranges: list[tuple[int, int]], block: tuple[int, int], max_lines: int) -> None:
    if ranges and block[1] - ranges[-1][0] <= max_lines:
        ranges[-1] = (ranges[-1][0], block[1])
    else:
        ranges.append(block)
