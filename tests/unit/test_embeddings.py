"""The dense encoder (real embedded model) and the vector store."""

import threading

import numpy as np
import pytest

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.embeddings import Encoder, VectorStore, text_key
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.models.llama_backend import Cancelled
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def encoder():
    return Encoder(precision="float32", max_seq_length=128)


def test_bfloat16_ranks_like_float32(encoder):
    texts = ["def add(a, b): return a + b", "class Cart: items = []", "SELECT * FROM users",
             "def total_cents(self): return sum(i.price for i in self.items)"]
    fast = Encoder(precision="bfloat16", max_seq_length=128).encode(texts)
    base = encoder.encode(texts)
    assert base.shape == fast.shape == (4, encoder.dimension)
    assert np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-3)
    assert float((base * fast).sum(1).min()) > 0.99


def test_dense_search_over_the_workspace(encoder):
    index = WorkspaceIndex(IndexSettings())
    index.build([FIXTURES / "workspace"])
    pending = index.pending_embeddings(1000)
    keys, texts = zip(*pending)
    index.add_embeddings(list(keys), encoder.encode(list(texts)))
    assert index.pending_embeddings(1000) == [] and index.embedded_count == index.snippet_count
    query = encoder.encode(["price after a percentage discount"])[0]
    hits = index.dense_search(query, 2)
    assert index.relative(hits[0][0].path) == "shop/pricing.py"
    excluded = index.dense_search(query, 2, exclude_path=hits[0][0].path)
    assert all(snippet.path != hits[0][0].path for snippet, _ in excluded)


def test_store_prunes_and_searches():
    store = VectorStore()
    keys = [text_key(t) for t in ("a", "b", "c")]
    store.add(keys, np.eye(3, dtype=np.float32))
    assert [sid for sid, _ in store.search(np.array([0, 1, 0.1]), 2, {10: keys[0], 11: keys[1], 12: keys[2]})] == [11, 12]
    store.prune(keys[:1])
    assert keys[1] not in store and keys[0] in store


def test_bad_retriever_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="no sentence-transformers model"):
        Encoder(str(tmp_path)).encode(["x"])


def test_a_cancelled_request_is_not_encoded(encoder):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        encoder.encode(["def f(): pass"], cancel=cancel)
    assert encoder.encode(["def f(): pass"], cancel=threading.Event()).shape == (1, encoder.dimension)
