"""What a perfect re-ranker could buy: the reward of the best-scored candidate of each hole
against BM25's top-1 and against no context (the stop item), from a run's scores.

If the best candidate barely beats BM25's first choice, no retriever training can show a gain
with this generator; the report says so per language and per split before any long run.
"""

from __future__ import annotations

import math
import statistics

from aligncoder_lsp.training.store import Run
from aligncoder_lsp.workspace.files import language_of

STOP = "stop"
"""Id of the stop item: the prompt without repository context."""


def hole_rewards(candidates: dict, scores: dict) -> dict | None:
    """Per-token log-likelihoods of one hole's target: with no context, with BM25's top-1,
    with the best candidate; None when the hole lacks a stop item or a BM25 candidate."""
    rewards = dict(zip(scores["ids"], scores["ll"]))
    bm25 = [c for c in candidates["candidates"] if c["source"] == "bm25" and c["id"] in rewards]
    if STOP not in rewards or not bm25:
        return None
    top = max(bm25, key=lambda c: c["score"])["id"]
    best = max(rewards, key=rewards.get)
    return {"none": rewards[STOP], "bm25_top1": rewards[top], "best": rewards[best],
            "best_is_stop": best == STOP, "best_is_bm25_top1": best == top}


def headroom(run: Run) -> dict:
    """The headroom report of every scored hole, overall and by (language, split)."""
    holes = {hole.id: hole for hole in run.holes()}
    candidates, scores = run.records("candidates"), run.records("scores")
    groups: dict[str, list[dict]] = {}
    for hole_id, score in scores.items():
        rewards = hole_rewards(candidates[hole_id], score) if hole_id in candidates else None
        if rewards is not None and hole_id in holes:
            hole = holes[hole_id]
            for group in ("all", f"{language_of(hole.path)}/{hole.split}"):
                groups.setdefault(group, []).append(rewards)
    return {group: _summary(rows) for group, rows in sorted(groups.items())}


def mean_with_interval(values: list[float]) -> list[float]:
    """Mean and a 95% normal interval of the mean."""
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return [round(mean, 4), round(mean - half, 4), round(mean + half, 4)]


def _summary(rows: list[dict]) -> dict:
    return {
        "holes": len(rows),
        "mean_ll": {key: round(statistics.fmean(r[key] for r in rows), 4) for key in ("none", "bm25_top1", "best")},
        "best_minus_bm25_top1": mean_with_interval([r["best"] - r["bm25_top1"] for r in rows]),
        "bm25_top1_minus_none": mean_with_interval([r["bm25_top1"] - r["none"] for r in rows]),
        "best_is_stop": round(statistics.fmean(r["best_is_stop"] for r in rows), 3),
        "bm25_top1_is_best": round(statistics.fmean(r["best_is_bm25_top1"] for r in rows), 3),
    }
