"""Coarse retrieval: BM25 over the base snippets, plus the current file's dependency snippets."""

from __future__ import annotations

import re

from aligncoder_lsp.config import RetrievalSettings
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.tokenize import code_tokens
from aligncoder_lsp.index.workspace_index import WorkspaceIndex

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def query_from_prefix(prefix: str, lines: int = 20) -> str:
    """The last ``lines`` non-empty complete lines before the cursor's line.

    The line being typed is left out so that the query, and with it the retrieved context
    at the head of the prompt, stays the same while the user types on one line.
    """
    complete = prefix[: prefix.rfind("\n") + 1].split("\n")
    tail = [line for line in complete[-4 * lines:] if line.strip()]
    return "\n".join(tail[-lines:])


def coarse_retrieve(index: WorkspaceIndex, query: str, k: int, current_path: str) -> list[tuple[Snippet, float]]:
    """Top-k base snippets from files other than the one being completed."""
    return index.search(query, k, exclude_path=current_path)


def coarse_candidates(index: WorkspaceIndex, path: str, prefix: str, settings: RetrievalSettings,
                      wanted: int) -> tuple[str, list[tuple[Snippet, float, str]]]:
    """The retrieval query for a cursor after ``prefix`` in ``path`` and what it retrieves,
    as (snippet, score, source): the best dependency signatures first, then the top
    ``wanted`` BM25 snippets of other files. Serving and training both select here."""
    query = query_from_prefix(prefix, settings.query_lines)
    dependencies = rank_dependencies(index.dependencies(path, prefix), query, settings.dependencies)
    coarse = [(s, 0.0, "dependency") for s in dependencies]
    coarse += [(s, score, "bm25") for s, score in coarse_retrieve(index, query, wanted, path)]
    return query, coarse


def rank_dependencies(snippets: list[Snippet], query: str, k: int = 2) -> list[Snippet]:
    """The ``k`` dependency snippets most related to the query: names used near the cursor
    first, then by shared tokens."""
    used = set(_IDENTIFIER.findall(query))
    tokens = set(code_tokens(query))

    def relevance(snippet: Snippet) -> tuple[bool, int]:
        return snippet.symbol in used, len(tokens.intersection(code_tokens(snippet.text)))

    return sorted(snippets, key=relevance, reverse=True)[:k]
