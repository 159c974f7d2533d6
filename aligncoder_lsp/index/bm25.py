"""Incremental Okapi BM25 over an inverted index.

Scores are those of ``rank_bm25.BM25Okapi`` (same k1, b, epsilon floor for negative idf,
query tokens counted with multiplicity); unlike it, documents can be added and removed
without rebuilding, and a query only touches the postings of its own tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable


class BM25:
    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}
        self._vocabulary: dict[int, tuple[str, ...]] = {}
        self._total_length = 0
        self._average_idf: float | None = None

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, doc_id: int, tokens: Iterable[str]) -> None:
        if doc_id in self._lengths:
            self.remove(doc_id)
        counts = Counter(tokens)
        length = sum(counts.values())
        postings = self._postings
        for token, count in counts.items():
            docs = postings.get(token)
            if docs is None:
                postings[token] = {doc_id: count}
            else:
                docs[doc_id] = count
        self._lengths[doc_id] = length
        self._vocabulary[doc_id] = tuple(counts)
        self._total_length += length
        self._average_idf = None

    def remove(self, doc_id: int) -> None:
        length = self._lengths.pop(doc_id, None)
        if length is None:
            return
        self._total_length -= length
        for token in self._vocabulary.pop(doc_id):
            docs = self._postings[token]
            del docs[doc_id]
            if not docs:
                del self._postings[token]
        self._average_idf = None

    def _raw_idf(self, document_frequency: int) -> float:
        n = len(self._lengths)
        return math.log(n - document_frequency + 0.5) - math.log(document_frequency + 0.5)

    def document_frequency(self, token: str) -> int:
        return len(self._postings.get(token, ()))

    def idf(self, token: str) -> float:
        docs = self._postings.get(token)
        if not docs:
            return 0.0
        idf = self._raw_idf(len(docs))
        if idf < 0:
            if self._average_idf is None:
                total = sum(self._raw_idf(len(d)) for d in self._postings.values())
                self._average_idf = total / len(self._postings)
            idf = self.epsilon * self._average_idf
        return idf

    def scores(self, query: Iterable[str]) -> dict[int, float]:
        """BM25 score of every document that shares a token with the query."""
        if not self._lengths:
            return {}
        average_length = self._total_length / len(self._lengths)
        k1, b = self.k1, self.b
        result: dict[int, float] = {}
        for token, multiplicity in Counter(query).items():
            docs = self._postings.get(token)
            if not docs:
                continue
            weight = self.idf(token) * multiplicity * (k1 + 1)
            for doc_id, tf in docs.items():
                norm = k1 * (1 - b + b * self._lengths[doc_id] / average_length)
                result[doc_id] = result.get(doc_id, 0.0) + weight * tf / (tf + norm)
        return result

    def top(self, query: Iterable[str], k: int, keep: Callable[[int], bool] = lambda _: True) -> list[tuple[int, float]]:
        ranked = sorted(self.scores(query).items(), key=lambda item: (-item[1], item[0]))
        return [(doc_id, score) for doc_id, score in ranked if keep(doc_id)][:k]
