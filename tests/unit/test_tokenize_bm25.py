import random

import pytest
from rank_bm25 import BM25Okapi

from aligncoder_lsp.index.bm25 import BM25
from aligncoder_lsp.index.tokenize import code_tokens


def test_identifiers_are_split_and_kept_whole():
    assert code_tokens("getHTTPResponse") == ["gethttpresponse", "get", "http", "response"]
    assert code_tokens("total_cents = 3") == ["total_cents", "total", "cents", "3"]
    assert code_tokens("x.y") == ["x", "y"]


def _corpus(seed: int, size: int) -> list[list[str]]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(60)]
    return [[rng.choice(vocabulary) for _ in range(rng.randint(1, 30))] for _ in range(size)]


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_rank_bm25(seed):
    corpus = _corpus(seed, 80)
    reference = BM25Okapi(corpus)
    ours = BM25()
    for doc_id, tokens in enumerate(corpus):
        ours.add(doc_id, tokens)
    query = corpus[seed][:5] + ["w1", "w1", "unknown"]
    expected = reference.get_scores(query)
    got = ours.scores(query)
    for doc_id in range(len(corpus)):
        assert got.get(doc_id, 0.0) == pytest.approx(expected[doc_id], rel=1e-9, abs=1e-9)


def test_removal_equals_rebuild_without_the_document():
    corpus = _corpus(7, 50)
    ours = BM25()
    for doc_id, tokens in enumerate(corpus):
        ours.add(doc_id, tokens)
    for doc_id in range(0, 50, 3):
        ours.remove(doc_id)
    kept = [doc_id for doc_id in range(50) if doc_id % 3]
    reference = BM25Okapi([corpus[i] for i in kept])
    query = ["w3", "w5", "w8", "w13"]
    expected = reference.get_scores(query)
    got = ours.scores(query)
    for position, doc_id in enumerate(kept):
        assert got.get(doc_id, 0.0) == pytest.approx(expected[position], rel=1e-9, abs=1e-9)


def test_top_filters_and_orders():
    ours = BM25()
    ours.add(1, ["alpha", "beta"])
    ours.add(2, ["alpha"])
    ours.add(3, ["gamma"])
    ranked = ours.top(["alpha"], 5, keep=lambda doc_id: doc_id != 2)
    assert [doc_id for doc_id, _ in ranked] == [1]
    assert [doc_id for doc_id, _ in ours.top(["alpha"], 5)] == [2, 1]
