"""*policy*: the selective-retrieval decision, trained on the run's rewards.

Each hole with the policy's features (recorded by *candidates*) and rewards is one example:
without retrieval the target's log-likelihood is the stop item's reward; with retrieval it
is the best reward among the first ``top_k`` BM25 candidates (what the prompt would show);
the label is whether retrieval raises it. The logistic policy is fitted on the train split,
its threshold chosen there for the best mean log-likelihood within the retrieval-rate
bound, and the held-out split reports what it keeps of the gain of always retrieving.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np

from aligncoder_lsp.evaluation.calibrate import choose_threshold
from aligncoder_lsp.retrieval.selective import FEATURES, SelectivePolicy
from aligncoder_lsp.training.headroom import STOP
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Run, RunError

logger = logging.getLogger(__name__)


def policy_examples(run: Run, top_k: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split: (features, log-likelihood without retrieval, with retrieval)."""
    splits = {hole.id: hole.split for hole in run.holes()}
    candidates, scores = run.records(CANDIDATES), run.records(SCORES)
    rows: dict[str, list[tuple[list[float], float, float]]] = {}
    for hole_id, score in scores.items():
        record = candidates.get(hole_id, {})
        features = record.get("selective")
        rewards = dict(zip(score["ids"], score["ll"]))
        bm25 = sorted((c for c in record.get("candidates", []) if c["source"] == "bm25" and c["id"] in rewards),
                      key=lambda c: -c["score"])[:top_k]
        if hole_id not in splits or STOP not in rewards or not bm25 or not isinstance(features, list) \
                or len(features) != len(FEATURES):
            continue
        rows.setdefault(splits[hole_id], []).append(
            (features, rewards[STOP], max(rewards[c["id"]] for c in bm25)))
    return {split: (np.array([r[0] for r in found], dtype=np.float64), np.array([r[1] for r in found]),
                    np.array([r[2] for r in found])) for split, found in rows.items()}


def outcome(policy: SelectivePolicy, features: np.ndarray, plain: np.ndarray, retrieved: np.ndarray) -> dict:
    """Retrieval rate and mean log-likelihood of the policy, against never and always retrieving."""
    chosen = np.array([policy.probability(row) >= policy.threshold for row in features])
    never, always = float(plain.mean()), float(retrieved.mean())
    selective = float(np.where(chosen, retrieved, plain).mean())
    return {"holes": len(plain), "retrieval_rate": round(float(chosen.mean()), 3),
            "ll_never": round(never, 4), "ll_always": round(always, 4), "ll_selective": round(selective, 4),
            "gain_kept": round((selective - never) / (always - never), 3) if always != never else None}


def run_policy(run: Run, out: Path, top_k: int, max_retrieval: float) -> dict:
    """Fit, choose the threshold on the train split, save to ``out``; returns the notes."""
    found = policy_examples(run, top_k)
    train = found.get("train")
    held_out = found.get("held-out")
    if train is None or len(train[1]) < 20 or held_out is None:
        raise RunError("the policy needs at least 20 training holes and some held-out holes with features and "
                       f"rewards (have {0 if train is None else len(train[1])} and "
                       f"{0 if held_out is None else len(held_out[1])}): run `train candidates` and `train score` further")
    features, plain, retrieved = train
    labels = (retrieved > plain).astype(float)
    policy = SelectivePolicy.fit(features, labels)
    probabilities = np.array([policy.probability(row) for row in features])
    policy.threshold = choose_threshold(probabilities, plain, retrieved, max_retrieval)[0]
    policy.notes = {"created": datetime.date.today().isoformat(), "made_by": "train policy",
                    "run": run.manifest().get("mine", {}), "retrieval_helps_rate": round(float(labels.mean()), 3),
                    "max_retrieval": max_retrieval, "train": outcome(policy, *train),
                    "held_out": outcome(policy, *held_out)}
    policy.save(out)
    return policy.notes
