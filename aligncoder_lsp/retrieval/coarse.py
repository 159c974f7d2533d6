"""Coarse retrieval: BM25 over the snippet index with the code just before the cursor."""

from __future__ import annotations

from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex


def query_from_prefix(prefix: str, lines: int = 20) -> str:
    """The last ``lines`` non-empty lines before the cursor."""
    tail = [line for line in prefix.split("\n")[-4 * lines:] if line.strip()]
    return "\n".join(tail[-lines:])


def coarse_retrieve(index: WorkspaceIndex, query: str, k: int, current_path: str) -> list[tuple[Snippet, float]]:
    """Top-k snippets from files other than the one being completed."""
    return index.search(query, k, exclude_path=current_path)
