"""Fine retrieval (AlignRetriever): dense re-ranking of the coarse candidates.

The query is the unfinished code, enhanced with the sampler's drafts (AlignCoder): the
drafts carry what the code is about to say, which the code before the cursor often does
not. The query keeps the most recent code within a size that leaves the encoder room for
the drafts. The dense score can be blended with the coarse (BM25) score, so that an
untrained encoder does not throw away a strong lexical match.
"""

from __future__ import annotations

import threading

import numpy as np

from aligncoder_lsp.index.embeddings import TextEncoder
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex

QUERY_CODE_CHARS = 600
"""Characters of code before the cursor in a fine query (about 150-200 tokens)."""
DRAFTED_QUERY_CODE_CHARS = 360
"""The same when drafts follow, so that code and drafts fit the encoder's 256 tokens."""


def enhanced_query(query: str, drafts: list[str] = ()) -> str:
    """The most recent code of ``query`` followed by the drafts as candidate answers."""
    drafts = [draft for draft in drafts if draft.strip()]
    code = query[-(DRAFTED_QUERY_CODE_CHARS if drafts else QUERY_CODE_CHARS):]
    if len(code) < len(query) and "\n" in code:
        code = code[code.index("\n") + 1:]
    parts = [code] + [f"# candidate answer {i}:\n{draft}" for i, draft in enumerate(drafts, 1)]
    return "\n".join(parts)


def serving_scores(documents, query, lexical, weight: float):
    """The re-ranking score: cosine of the (normalised) snippet and query vectors plus
    ``weight`` times the coarse scores scaled to [0, 1]; numpy arrays or torch tensors
    (training computes the same score with gradients)."""
    return documents @ query + weight * lexical


def fine_rank(encoder: TextEncoder, index: WorkspaceIndex, query: str, candidates: list[Snippet],
              lexical: list[float] | None = None, weight: float = 0.0,
              cancel: threading.Event | None = None) -> list[tuple[Snippet, float]]:
    """``candidates`` by cosine similarity to ``query`` (stored vectors reused), plus
    ``weight`` times their ``lexical`` scores scaled to [0, 1]. Raises ``Cancelled`` when
    ``cancel`` is set while the encoder is busy."""
    if not candidates:
        return []
    vectors = index.vectors_for(candidates)
    missing = [i for i, vector in enumerate(vectors) if vector is None]
    if missing:
        for i, vector in zip(missing, encoder.encode([candidates[i].text for i in missing], cancel=cancel)):
            vectors[i] = vector
    scaled = np.asarray(lexical) / max(lexical) if lexical is not None and max(lexical) > 0 else 0.0
    scores = serving_scores(np.stack(vectors), encoder.encode([query], cancel=cancel, queries=True)[0], scaled, weight)
    order = np.argsort(-scores, kind="stable")
    return [(candidates[i], float(scores[i])) for i in order]
