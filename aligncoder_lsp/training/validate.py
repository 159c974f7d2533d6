"""*validate*: retrievers compared on the held-out holes of a run.

For each held-out hole that has rewards, each ranker (BM25's order, and each retriever's
serving score: cosine of query and snippet vectors plus the BM25 blend) orders the
candidates; the top ones that fit the context budget are rendered as serving renders them,
and the generator's log-likelihood of the true target in that prompt is measured. The
report gives, per ranker, that mean log-likelihood with a paired interval against the first
retriever, and the ranking metrics against the reward labels (hit@1, KL).
"""

from __future__ import annotations

import logging
import statistics

import numpy as np

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.embeddings import Encoder
from aligncoder_lsp.models.llama_backend import LlamaModel, TargetScorer
from aligncoder_lsp.models.prompts import COMMENT, ContextPiece, code_window, fit_context, render_context
from aligncoder_lsp.retrieval.fine import serving_scores
from aligncoder_lsp.training.corpus import Repository, files_with_holes, index_settings
from aligncoder_lsp.training.fit import Example, FitSettings, examples, ranking_metrics
from aligncoder_lsp.training.headroom import STOP, mean_with_interval
from aligncoder_lsp.training.store import CANDIDATES, Progress, Run, RunError
from aligncoder_lsp.workspace.files import language_of

logger = logging.getLogger(__name__)

BM25 = "bm25"


def piece_of(shown: str, language: str, dependency: bool) -> ContextPiece:
    """The context piece a one-candidate block shows (the inverse of :func:`render_context`)."""
    mark = COMMENT.get(language, "#")
    lines = shown.rstrip("\n").split("\n")
    path = lines[1][len(f"{mark} --- "):]
    body = [line[len(mark) + 1:] if line.startswith(mark + " ") else line[len(mark):] for line in lines[2:]]
    return ContextPiece(path, "\n".join(body), dependency)


def context_of(order: list[int], pieces: list[ContextPiece], settings: Settings, language: str, count) -> str:
    """The context block serving would build from candidates in ``order``."""
    retrieval = settings.retrieval
    ranked = [pieces[i] for i in order]
    chosen = fit_context(ranked, retrieval.context_tokens, retrieval.top_k + retrieval.dependencies, count)
    return render_context([(piece.path, piece.text) for _, piece in chosen[::-1]], language)


def dense_scores(encoder: Encoder, example: Example, lexical_weight: float) -> np.ndarray:
    """The serving score of each candidate (cosine plus the BM25 blend)."""
    return serving_scores(encoder.encode(example.texts), encoder.encode([example.query], queries=True)[0],
                          example.lexical, lexical_weight)


def run_validate(run: Run, repositories: dict[str, Repository], settings: Settings, model: LlamaModel,
                 retrievers: dict[str, str], window_tokens: int, limit: int | None = None,
                 log_every: int = 10) -> dict:
    """Compare BM25 and ``retrievers`` (name -> folder, '' for the embedded one) on held-out
    holes; differences are paired against the first retriever."""
    manifest = run.manifest()
    held_out = {example.hole: example for example in examples(run) if example.split != "train"}
    if not held_out:
        raise RunError("no held-out hole has rewards yet: run `train candidates` and `train score` further")
    records = run.records(CANDIDATES)
    holes = [hole for hole in run.holes() if hole.id in held_out][:limit]
    encoders = {name: Encoder(folder, settings.retriever.precision, settings.retriever.max_tokens)
                for name, folder in retrievers.items()}
    fit = FitSettings(lexical_weight=settings.retrieval.lexical_weight)
    likelihoods: dict[str, list[float]] = {name: [] for name in [BM25, *retrievers]}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in likelihoods}
    used: list[Example] = []
    scorer = TargetScorer(model)
    progress = Progress("validate", len(holes), log_every)
    try:
        for _, _, source, holes_of_file in files_with_holes(holes, repositories, manifest,
                                                            index_settings(settings.index, manifest.get("exclude", [])),
                                                            "validate"):
            for hole in holes_of_file:
                example, language = held_out[hole.id], language_of(hole.path) or "python"
                items = {c["text"]: c for c in records[hole.id]["candidates"] if c["id"] != STOP}
                pieces = [piece_of(items[text]["shown"], language, items[text]["source"] == "dependency")
                          for text in example.texts]
                code, healed = code_window(source.text[: hole.offset], window_tokens, model.count_tokens)
                rankings = {BM25: -np.arange(len(pieces), dtype=np.float32)}
                rankings.update((name, dense_scores(encoder, example, fit.lexical_weight))
                                for name, encoder in encoders.items())
                for name, ranking in rankings.items():
                    order = list(np.argsort(-ranking, kind="stable"))
                    block = context_of(order, pieces, settings, language, model.count_tokens)
                    likelihoods[name].append(scorer.score(block + code, healed + hole.target).mean)
                    scores[name].append(ranking)
                used.append(example)
                progress.tick()
    finally:
        scorer.close()
    return _report(used, likelihoods, scores, fit, first=next(iter(retrievers), BM25))


def _report(used: list[Example], likelihoods: dict[str, list[float]], scores: dict[str, list[np.ndarray]],
            fit: FitSettings, first: str) -> dict:
    report: dict = {"holes": len(used), "top_k_likelihood": {}, "ranking": {}, f"minus_{first}": {}}
    for name, values in likelihoods.items():
        if not values:
            continue
        report["top_k_likelihood"][name] = round(statistics.fmean(values), 4)
        report["ranking"][name] = ranking_metrics(used, scores[name], fit)
        if name == BM25:  # its scores are positions: only its choices mean something
            report["ranking"][name].pop("kl")
        if name != first:
            report[f"minus_{first}"][name] = mean_with_interval([a - b for a, b in zip(values, likelihoods[first])])
    return report
