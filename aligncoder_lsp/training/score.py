"""*score*: the reward of each candidate of a hole.

Reward = mean log-likelihood of the hole's true target under the generator, in the served
prompt layout: the context block holding that one candidate, then the code before the
cursor (at most ``window_tokens``), then the target. Logits are computed only at the
positions that predict target tokens. The code window and the target are the same for all
candidates of a hole, but they come after the candidate, so only the common head of the
prompts (BOS and the context header) is reused from the KV cache; candidates are scored in
the order of their rendered text to make that head as long as possible. On an inference
engine (``--engine``) the log-likelihoods come from the engine's log-probabilities of the
prompt, all candidates of a hole at once.

Per hole one compact line: candidate ids, rounded log-likelihoods, the target's token count
(``n``), the tokens evaluated (``t``) and the seconds taken (``s``).
"""

from __future__ import annotations

import logging
import threading
import time

from aligncoder_lsp.config import Settings
from aligncoder_lsp.models.backend import Scorer
from aligncoder_lsp.models.prompts import code_window
from aligncoder_lsp.training.corpus import Repository, files_with_holes, index_settings
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Hole, Progress, Run, Shard

logger = logging.getLogger(__name__)

WINDOW_TOKENS = 384
"""Default tokens of in-file code before the cursor when scoring (TRAINING.md's recipe)."""


def score_hole(scorer: Scorer, hole: Hole, prefix: str, candidates: list[dict], window_tokens: int,
               cancel: threading.Event | None = None) -> dict:
    """The record of one hole: each candidate's mean target log-likelihood."""
    code, healed = code_window(prefix, window_tokens, scorer.count_tokens)
    target = healed + hole.target
    order = sorted(range(len(candidates)), key=lambda i: candidates[i]["shown"])  # shared prefixes together
    results = scorer.score_all([candidates[i]["shown"] + code for i in order], target, cancel)
    means = {position: round(result.mean, 4) for position, result in zip(order, results)}
    tokens = len(results[-1].logprobs) if results else 0
    evaluated = sum(r.prompt_tokens + max(0, len(r.logprobs) - 1) - r.reused_tokens for r in results)
    return {"hole": hole.id, "ids": [c["id"] for c in candidates], "ll": [means[i] for i in range(len(candidates))],
            "n": tokens, "t": evaluated}


def run_score(run: Run, repositories: dict[str, Repository], settings: Settings, scorer: Scorer, shard: Shard,
              window_tokens: int = WINDOW_TOKENS, limit: int | None = None, log_every: int = 10) -> int:
    """Score the shard's holes that have candidates and no score yet; returns how many."""
    manifest = run.manifest()
    window_tokens = min(window_tokens, settings.completion.prefix_tokens)
    run.settle("score", {**scorer.facts(), "window_tokens": window_tokens})
    candidates = run.records(CANDIDATES)
    done = set(run.records(SCORES))
    holes = [hole for hole in run.holes(shard) if hole.id not in done]
    todo = [hole for hole in holes if hole.id in candidates]
    if len(todo) < len(holes):
        logger.info("score: %d holes of this shard have no candidates yet (run `train candidates`)",
                    len(holes) - len(todo))
    todo = todo[:limit] if limit is not None else todo
    output = run.shard_file(SCORES, shard)
    output.repair()
    indexing = index_settings(settings.index, manifest.get("exclude", []))
    progress = Progress("score", len(todo), log_every, already=len(done))
    for _, _, source, holes_of_file in files_with_holes(todo, repositories, manifest, indexing, "score"):
        for hole in holes_of_file:
            started = time.perf_counter()
            record = score_hole(scorer, hole, source.text[: hole.offset], candidates[hole.id]["candidates"],
                                window_tokens)
            record["s"] = round(time.perf_counter() - started, 2)
            output.append(record)
            progress.tick()
    return progress.done
