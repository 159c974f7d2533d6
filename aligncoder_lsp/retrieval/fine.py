"""Fine retrieval (AlignRetriever): dense re-ranking of the coarse candidates.

The query is the unfinished code, enhanced with the sampler's drafts (AlignCoder): the
drafts carry what the code is about to say, which the code before the cursor often does
not. The query keeps the most recent code within a size the encoder reads whole.
"""

from __future__ import annotations

import numpy as np

from aligncoder_lsp.index.embeddings import TextEncoder
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex

QUERY_CODE_CHARS = 600
"""Characters of code before the cursor in a fine query (about 150-200 tokens)."""


def enhanced_query(query: str, drafts: list[str] = ()) -> str:
    """The most recent code of ``query`` followed by the drafts as candidate answers."""
    code = query[-QUERY_CODE_CHARS:]
    if len(code) < len(query) and "\n" in code:
        code = code[code.index("\n") + 1:]
    parts = [code] + [f"# candidate answer {i}:\n{draft}" for i, draft in enumerate(drafts, 1) if draft.strip()]
    return "\n".join(parts)


def fine_rank(encoder: TextEncoder, index: WorkspaceIndex, query: str,
              candidates: list[Snippet]) -> list[tuple[Snippet, float]]:
    """``candidates`` by cosine similarity to ``query`` (stored vectors reused)."""
    if not candidates:
        return []
    vectors = index.vectors_for(candidates)
    missing = [i for i, vector in enumerate(vectors) if vector is None]
    encoded = encoder.encode([query] + [candidates[i].text for i in missing])
    for row, i in enumerate(missing, 1):
        vectors[i] = encoded[row]
    scores = np.stack(vectors) @ encoded[0]
    order = np.argsort(-scores, kind="stable")
    return [(candidates[i], float(scores[i])) for i in order]
