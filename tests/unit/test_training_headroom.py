"""The headroom report: best candidate against BM25's first choice and against no context."""

import pytest

from aligncoder_lsp.training.headroom import headroom, hole_rewards
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Hole, Run, Shard


def _candidates(hole_id: str) -> dict:
    return {"hole": hole_id, "candidates": [
        {"id": "dependency:a.py:1-3", "source": "dependency", "score": 0.0},
        {"id": "bm25:b.py:1-9", "source": "bm25", "score": 12.0},
        {"id": "bm25:c.py:4-9", "source": "bm25", "score": 30.0},
        {"id": "stop", "source": "stop", "score": 0.0}]}


def _scores(hole_id: str, lls: list[float]) -> dict:
    return {"hole": hole_id, "ids": ["dependency:a.py:1-3", "bm25:b.py:1-9", "bm25:c.py:4-9", "stop"], "ll": lls}


def test_rewards_of_one_hole():
    rewards = hole_rewards(_candidates("h"), _scores("h", [-1.0, -0.2, -0.9, -1.5]))
    assert rewards == {"none": -1.5, "bm25_top1": -0.9, "best": -0.2,  # BM25's top-1 is c.py (score 30)
                       "best_is_stop": False, "best_is_bm25_top1": False}
    assert hole_rewards(_candidates("h"), {"hole": "h", "ids": ["bm25:c.py:4-9"], "ll": [-1.0]}) is None


def test_the_report_groups_holes_by_language_and_split(tmp_path):
    run = Run(tmp_path / "run")
    holes = [Hole(f"r/m{n}.py@{n}", "r", f"m{n}.py", 1, 0, n, "x = 1", "line", False, split)
             for n, split in enumerate(["train", "train", "held-out"])]
    run.write_holes(holes)
    lls = [[-1.0, -0.2, -0.9, -1.5], [-1.0, -0.5, -0.4, -1.5], [-1.0, -0.9, -0.8, -0.3]]
    for hole, values in zip(holes, lls):
        run.shard_file(CANDIDATES, Shard()).append(_candidates(hole.id))
        run.shard_file(SCORES, Shard()).append(_scores(hole.id, values))
    report = headroom(run)
    assert set(report) == {"all", "python/train", "python/held-out"}
    assert report["all"]["holes"] == 3
    assert report["all"]["mean_ll"]["best"] == pytest.approx((-0.2 - 0.4 - 0.3) / 3, abs=1e-4)
    assert report["all"]["best_is_stop"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["all"]["bm25_top1_is_best"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["python/train"]["best_minus_bm25_top1"][0] == pytest.approx((0.7 + 0.0) / 2, abs=1e-4)
