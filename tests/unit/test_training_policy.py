"""The selective-retrieval policy trained on a run's rewards."""

import json
import random

import pytest

from aligncoder_lsp.retrieval.selective import FEATURES, SelectivePolicy
from aligncoder_lsp.training.policy import policy_examples, run_policy
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Hole, Run, RunError, Shard


def _run(tmp_path, holes: int = 80) -> Run:
    """Retrieval helps exactly where the repository overlap (the last feature) is high."""
    rng = random.Random(0)
    run = Run(tmp_path / "run")
    made = [Hole(f"r/m{n}.py@{n}", "r", f"m{n}.py", 1, 0, n, "x = 1", "line", False,
                 "held-out" if n % 4 == 0 else "train") for n in range(holes)]
    run.write_holes(made)
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"mine": {"seed": 0}}))
    for hole in made:
        overlap = rng.random()
        features = [1.0] + [rng.gauss(0, 1) for _ in FEATURES[1:-1]] + [overlap]
        items = [{"id": f"bm25:{i}", "source": "bm25", "score": 10.0 - i} for i in range(5)] + [
            {"id": "stop", "source": "stop", "score": 0.0}]
        run.shard_file(CANDIDATES, Shard()).append({"hole": hole.id, "candidates": items, "selective": features})
        helped = -0.2 if overlap > 0.6 else -1.2
        lls = [-2.0, -2.0, -2.0, helped, -2.0, -1.0]  # the 4th BM25 candidate is beyond the top 3
        run.shard_file(SCORES, Shard()).append({"hole": hole.id, "ids": [c["id"] for c in items], "ll": lls})
    return run


def test_the_label_uses_what_the_prompt_would_show(tmp_path):
    found = policy_examples(_run(tmp_path), top_k=3)
    features, plain, retrieved = found["train"]
    assert len(plain) == 60 and features.shape == (60, len(FEATURES))
    assert set(retrieved) == {-2.0}  # the helpful candidate is 4th: the prompt shows the top 3
    assert set(policy_examples(_run(tmp_path / "again"), top_k=4)["train"][2]) == {-0.2, -1.2}


def test_the_policy_retrieves_where_it_helps_on_held_out_holes(tmp_path):
    out = tmp_path / "policy.json"
    notes = run_policy(_run(tmp_path), out, top_k=4, max_retrieval=0.5)
    held_out = notes["held_out"]
    assert notes["train"]["retrieval_rate"] <= 0.5 and held_out["holes"] == 20 and held_out["retrieval_rate"] < 1
    assert held_out["ll_selective"] > max(held_out["ll_never"], held_out["ll_always"])
    assert SelectivePolicy.load(out).notes["made_by"] == "train policy"


def test_too_few_holes_with_features_is_explained(tmp_path):
    with pytest.raises(RunError, match="at least 20 training holes"):
        run_policy(_run(tmp_path, holes=8), tmp_path / "p.json", top_k=3, max_retrieval=0.5)
