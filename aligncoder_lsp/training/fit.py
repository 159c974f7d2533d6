"""*fit*: train the retriever's query tower on the rewards (listwise distillation).

For every scored hole the teacher's distribution over its candidates is the softmax of their
rewards (mean target log-likelihood per token) at temperature ``teacher_temperature``; the
student's is the softmax of the serving score (cosine of query and snippet vectors, plus the
BM25 blend) times a scale learnt with it (from ``1 / student_temperature``), so the encoder
learns the ranking rather than the spread of the teacher's distribution. The loss is
KL(teacher ‖ student); ``loss="hard"`` is the hard-label alternative (cross-entropy against the
best-rewarded candidate). The stop item is left out: it is the selective policy's business,
not the ranking's.

Only the query tower learns: snippet vectors come from the base retriever, so every stored
vector stays valid and the index is never re-embedded. The checkpoint is the query tower's
sentence-transformers folder with a ``retriever.json`` naming the base that encodes snippets
(see :mod:`aligncoder_lsp.index.embeddings`) and a training card. Held-out repositories pick
the best pass by what serving gets, the mean reward of the first-ranked candidate (a lower KL
can come from the spread alone); nothing is tuned on benchmark tasks.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from aligncoder_lsp.retrieval.fine import serving_scores
from aligncoder_lsp.training.headroom import STOP
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Run, RunError, format_duration

logger = logging.getLogger(__name__)

CARD = "README.md"


@dataclass(frozen=True)
class FitSettings:
    """How the query tower is trained (defaults from TRAINING.md's recipe; none were tuned
    on benchmark tasks)."""

    loss: str = "kl"
    """``kl`` (listwise distillation of the reward distribution) or ``hard`` (cross-entropy
    against the best-rewarded candidate)."""
    teacher_temperature: float = 0.1
    student_temperature: float = 0.05
    """The student's starting temperature; its inverse, the scale, is learnt."""
    learning_rate: float = 3e-5
    scale_learning_rate: float = 1e-2
    epochs: int = 4
    batch_holes: int = 16
    warmup: float = 0.1
    lexical_weight: float = 0.15
    """The serving blend of the BM25 score (``retrieval.lexicalWeight``)."""
    seed: int = 0


@dataclass
class Example:
    """One scored hole: its query and its candidates (the stop item left out)."""

    hole: str
    repo: str
    split: str
    query: str
    texts: list[str]
    lexical: np.ndarray
    """Coarse scores scaled as serving scales them for the blend."""
    rewards: np.ndarray
    coarse_first: int
    """Position of BM25's top-1 among ``texts`` (-1: none)."""


def examples(run: Run) -> list[Example]:
    """The run's holes that have candidates and scores, with at least two real candidates."""
    holes = {hole.id: hole for hole in run.holes()}
    candidates, scores = run.records(CANDIDATES), run.records(SCORES)
    found = []
    for hole_id, score in sorted(scores.items()):
        if hole_id not in candidates or hole_id not in holes:
            continue
        rewards = dict(zip(score["ids"], score["ll"]))
        items = [c for c in candidates[hole_id]["candidates"] if c["id"] != STOP and c["id"] in rewards]
        if len(items) < 2:
            continue
        lexical = np.array([c["score"] for c in items], dtype=np.float32)
        lexical = lexical / lexical.max() if lexical.max() > 0 else np.zeros_like(lexical)
        bm25 = [i for i, c in enumerate(items) if c["source"] == "bm25"]
        found.append(Example(hole_id, holes[hole_id].repo, holes[hole_id].split, candidates[hole_id]["enhanced_query"],
                             [c["text"] for c in items], lexical,
                             np.array([rewards[c["id"]] for c in items], dtype=np.float32),
                             max(bm25, key=lambda i: items[i]["score"]) if bm25 else -1))
    return found


def examples_of(runs: list[Run]) -> list[Example]:
    """The scored holes of several runs (e.g. one per language); a repository held out in any
    of them is held out in all, so no held-out code is trained on."""
    per_run = [examples(run) for run in runs]
    held_out = [{hole.repo for hole in run.holes() if hole.split != "train"} for run in runs]
    joined = []
    for position, found in enumerate(per_run):
        elsewhere = set().union(*(repos for other, repos in enumerate(held_out) if other != position))
        joined.extend(replace(example, split="held-out") if example.repo in elsewhere else example
                      for example in found)
    return joined


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def ranking_metrics(examples: list[Example], scores: list[np.ndarray], settings: FitSettings,
                    scale: float | None = None) -> dict:
    """How a ranking (serving scores per example) agrees with the rewards: KL of the teacher
    to the student (its scores times ``scale``, by default ``1 / student_temperature``), hit@1
    (the student's first is the best-rewarded), and the mean reward of the student's first,
    against BM25's first and the best."""
    scale = 1 / settings.student_temperature if scale is None else scale
    kl, hits, first, bm25, best = [], [], [], [], []
    for example, score in zip(examples, scores):
        teacher = _softmax(example.rewards / settings.teacher_temperature)
        student = _softmax(score * scale)
        kl.append(float(np.sum(teacher * (np.log(teacher + 1e-12) - np.log(student + 1e-12)))))
        top = int(np.argmax(score))
        hits.append(top == int(np.argmax(example.rewards)))
        first.append(float(example.rewards[top]))
        best.append(float(example.rewards.max()))
        bm25.append(float(example.rewards[example.coarse_first]) if example.coarse_first >= 0 else float("nan"))
    if not examples:
        return {"holes": 0}
    return {"holes": len(examples), "kl": round(float(np.mean(kl)), 4), "hit_at_1": round(float(np.mean(hits)), 4),
            "reward_first": round(float(np.mean(first)), 4), "reward_bm25_first": round(float(np.nanmean(bm25)), 4),
            "reward_best": round(float(np.mean(best)), 4)}


class QueryTower:
    """A trainable copy of the base retriever for queries, and the base's frozen snippet
    vectors (cached by text within one fit)."""

    def __init__(self, base: Path, max_seq_length: int = 256):
        from sentence_transformers import SentenceTransformer

        self.base = base
        self.model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
        self.model.max_seq_length = max_seq_length
        self._documents: dict[str, np.ndarray] = {}

    def document_vectors(self, texts: list[str]) -> np.ndarray:
        missing = sorted({text for text in texts if text not in self._documents})
        if missing:  # before any update, the model is still the base
            vectors = self.model.encode(missing, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
            self._documents.update(zip(missing, vectors))
        return np.stack([self._documents[text] for text in texts])

    def query_vectors(self, queries: list[str], grad: bool = False):
        import torch
        import torch.nn.functional as F

        with torch.set_grad_enabled(grad):
            features = self.model.preprocess(queries)
            return F.normalize(self.model(features)["sentence_embedding"], dim=-1)

    def scores(self, batch: list[Example], settings: FitSettings, grad: bool = False):
        """Serving scores (cosine + blend) of each example's candidates, as tensors."""
        import torch

        queries = self.query_vectors([example.query for example in batch], grad)
        result = []
        for row, example in enumerate(batch):
            documents = torch.from_numpy(self.document_vectors(example.texts))
            lexical = torch.from_numpy(example.lexical)
            result.append(serving_scores(documents, queries[row], lexical, settings.lexical_weight))
        return result


def _loss(scores, batch: list[Example], settings: FitSettings, log_scale):
    import torch
    import torch.nn.functional as F

    total = 0.0
    for score, example in zip(scores, batch):
        log_student = F.log_softmax(score * log_scale.exp(), dim=0)
        if settings.loss == "hard":
            total = total - log_student[int(np.argmax(example.rewards))]
        else:  # kl_div takes the student's log-probabilities and the teacher's probabilities
            teacher = torch.softmax(torch.from_numpy(example.rewards) / settings.teacher_temperature, dim=0)
            total = total + F.kl_div(log_student, teacher, reduction="sum")
    return total / len(batch)


def evaluate(tower: QueryTower, examples: list[Example], settings: FitSettings, scale: float | None = None) -> dict:
    tower.model.eval()
    scores = []
    for start in range(0, len(examples), 32):
        batch = examples[start:start + 32]
        scores.extend(score.numpy() for score in tower.scores(batch, settings))
    return ranking_metrics(examples, scores, settings, scale)


def run_fit(runs: list[Run], base: Path, out: Path, settings: FitSettings, log_every: int = 10) -> dict:
    """Fit the query tower on the runs' train split, keep the pass whose first-ranked
    candidates have the highest mean reward on the held-out split (it must beat the untrained
    retriever's), save it to ``out``; returns the report (also in the card)."""
    import torch

    if settings.loss not in ("kl", "hard"):
        raise RunError(f"unknown loss {settings.loss!r} (kl or hard)")
    found = examples_of(runs)
    train = [example for example in found if example.split == "train"]
    held_out = [example for example in found if example.split != "train"]
    if not train or not held_out:
        raise RunError(f"fit needs scored holes in both splits (train {len(train)}, held-out {len(held_out)}): "
                       "run `train candidates` and `train score` further")
    started = time.monotonic()
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    tower = QueryTower(base)
    tower.document_vectors([text for example in found for text in example.texts])
    report = {"settings": asdict(settings), "runs": [run.folder.name for run in runs],
              "holes": {"train": len(train), "held_out": len(held_out)},
              "untrained": {"train": evaluate(tower, train, settings), "held_out": evaluate(tower, held_out, settings)},
              "passes": []}
    logger.info("fit: untrained held-out %s", report["untrained"]["held_out"])
    best_reward, best_state = report["untrained"]["held_out"]["reward_first"], None
    steps = settings.epochs * math.ceil(len(train) / settings.batch_holes)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / settings.student_temperature), dtype=torch.float64))
    optimizer = torch.optim.AdamW([{"params": list(tower.model.parameters())},
                                   {"params": [log_scale], "lr": settings.scale_learning_rate, "weight_decay": 0.0}],
                                  lr=settings.learning_rate)
    warmup = max(1, int(settings.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    step = 0
    for epoch in range(1, settings.epochs + 1):
        order = train[:]
        random.shuffle(order)
        tower.model.train()
        losses = []
        for start in range(0, len(order), settings.batch_holes):
            batch = order[start:start + settings.batch_holes]
            loss = _loss(tower.scores(batch, settings, grad=True), batch, settings, log_scale)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tower.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            if step % log_every == 0:
                elapsed = time.monotonic() - started
                logger.info("fit: step %d/%d, loss %.4f, ETA %s", step, steps, float(np.mean(losses[-log_every:])),
                            format_duration(elapsed / step * (steps - step)))
        scale = math.exp(log_scale.item())
        measured = {"pass": epoch, "train_loss": round(float(np.mean(losses)), 4), "scale": round(scale, 2),
                    "held_out": evaluate(tower, held_out, settings, scale)}
        report["passes"].append(measured)
        logger.info("fit: pass %d held-out %s", epoch, measured["held_out"])
        if measured["held_out"]["reward_first"] > best_reward:
            best_reward, report["best_pass"] = measured["held_out"]["reward_first"], epoch
            best_state = {name: tensor.detach().clone() for name, tensor in tower.model.state_dict().items()}
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    if best_state is None:
        raise RunError("no pass beat the untrained retriever on the held-out mean reward of the first-ranked "
                       f"candidate ({best_reward}); nothing saved. Report: {json.dumps(report)}")
    tower.model.load_state_dict(best_state)
    save_checkpoint(tower, out, runs, report)
    return report


def save_checkpoint(tower: QueryTower, out: Path, runs: list[Run], report: dict) -> None:
    """The query tower in half precision, ``retriever.json`` and the training card."""
    from aligncoder_lsp.index.embeddings import QUERY_TOWER_FILE
    from aligncoder_lsp.models.embedded import embedded_retriever

    tower.model.half()
    tower.model.save(str(out))
    manifests = [run.manifest() for run in runs]
    base = tower.base.resolve()
    documents = "embedded" if base == embedded_retriever().resolve() else str(base)
    (out / QUERY_TOWER_FILE).write_text(json.dumps({"documents": documents}, indent=1) + "\n")
    (out / CARD).write_text(training_card(manifests, report), encoding="utf-8")


def training_card(manifests: list[dict], report: dict) -> str:
    repositories = "\n".join(
        f"| {entry['name']} | {entry.get('version', '')} | {entry.get('licence', entry.get('license', ''))} "
        f"| {len(entry.get('files', {}))} |" for manifest in manifests for entry in manifest.get("repositories", []))
    generators = ", ".join(sorted({manifest.get("generator", "") for manifest in manifests}))
    return f"""# AlignRetriever query tower

A sentence-transformers model that encodes completion queries (the code before the cursor and
the sampler's drafts); snippets keep the base retriever's vectors (`retriever.json`). Trained by
`aligncoder-lsp train fit`: listwise distillation of the generator's rewards
(`{generators}`) over each hole's candidates.

## Data

{report['holes']['train']} training holes, {report['holes']['held_out']} held-out holes (split by repository),
from the runs {', '.join(report['runs'])}.

| repository | version | licence | files |
|---|---|---|---|
{repositories}

## Held-out ranking (reward = mean log-likelihood per target token)

```json
{json.dumps({"untrained": report["untrained"]["held_out"], "passes": report["passes"],
             "best_pass": report["best_pass"]}, indent=1)}
```

## Settings

```json
{json.dumps(report["settings"], indent=1)}
```

Training took {report['minutes']} minutes.
"""
