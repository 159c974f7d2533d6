"""Fine retrieval and the selective policy, with a deterministic stand-in encoder."""

import numpy as np

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.retrieval.fine import DRAFTED_QUERY_CODE_CHARS, QUERY_CODE_CHARS, enhanced_query, fine_rank
from aligncoder_lsp.retrieval.selective import FEATURES, SelectivePolicy
from aligncoder_lsp.evaluation.calibrate import choose_threshold


class BagOfWords:
    """Encodes texts as normalised counts of a few words: enough to check the ranking."""

    WORDS = ("discount", "cart", "vat", "greet")

    def encode(self, texts, cancel=None, queries=False):
        rows = np.array([[text.count(word) + 1e-3 for word in self.WORDS] for text in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_drafts_steer_the_fine_ranking():
    index = WorkspaceIndex(IndexSettings())
    snippets = [Snippet("a.py", 0, 1, "def apply_discount(p): ..."), Snippet("b.py", 0, 1, "def add_vat(p): ...")]
    plain = fine_rank(BagOfWords(), index, enhanced_query("total = vat"), snippets)
    assert plain[0][0].path == "b.py"
    steered = fine_rank(BagOfWords(), index, enhanced_query("total = vat", ["discount(discount)", "discount"]), snippets)
    assert steered[0][0].path == "a.py"
    query = enhanced_query("total = vat", ["discount(discount)", "discount"])
    blended = fine_rank(BagOfWords(), index, query, snippets, lexical=[0.0, 12.5], weight=2.0)
    assert blended[0][0].path == "b.py" and blended[0][1] > 2.0
    assert fine_rank(BagOfWords(), index, query, snippets, lexical=[0.0, 0.0], weight=2.0) == steered
    assert fine_rank(BagOfWords(), index, "x", []) == []


def test_enhanced_query_keeps_recent_code_and_every_draft():
    code = "\n".join(f"line_{n} = {n}" for n in range(200))
    query = enhanced_query(code, ["first()", "", "second()"])
    assert "line_199 = 199" in query and "line_0 = 0" not in query
    assert query.endswith("# candidate answer 1:\nfirst()\n# candidate answer 2:\nsecond()")
    assert len(query.split("# candidate answer")[0]) <= DRAFTED_QUERY_CODE_CHARS + 1
    assert len(enhanced_query(code)) <= QUERY_CODE_CHARS


def test_policy_learns_a_separable_rule_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, len(FEATURES)))
    features[:, 0] = 1.0
    labels = (features[:, 1] < 0).astype(float)  # retrieval helps when the model is unsure
    policy = SelectivePolicy.fit(features, labels)
    predicted = np.array([policy.probability(row) >= 0.5 for row in features])
    assert (predicted == labels).mean() > 0.95
    policy.threshold = 0.3
    policy.save(tmp_path / "p.json")
    loaded = SelectivePolicy.load(tmp_path / "p.json")
    assert loaded.threshold == 0.3 and loaded.probability(features[0]) == policy.probability(features[0])


def test_threshold_respects_the_retrieval_budget():
    probabilities = np.array([0.9, 0.8, 0.2, 0.1])
    plain = np.array([0.1, 0.2, 0.9, 0.9])
    retrieved = np.array([0.9, 0.8, 0.5, 0.5])
    threshold, es, rate = choose_threshold(probabilities, plain, retrieved, max_rate=0.5)
    assert threshold == 0.8 and rate == 0.5 and es == np.mean([0.9, 0.8, 0.9, 0.9])
