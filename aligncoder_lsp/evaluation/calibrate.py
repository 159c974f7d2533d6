"""``aligncoder-lsp calibrate``: learn the selective-retrieval policy from code, self-supervised.

Spans are cut from the repositories' own files: a statement is masked, the file is
reduced to the code before it (honestly, as in ``eval``), and the statement is completed
twice, without retrieval and with the AlignCoder pipeline. Label: retrieval raised edit
similarity. The policy is a logistic model over the features of the context-free attempt;
its threshold is the one that keeps the most edit similarity while retrieving on at most
``--max-retrieval`` of the spans. Files named in ``--exclude-tasks`` are never sampled.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from aligncoder_lsp.config import Settings
from aligncoder_lsp.evaluation import require_bench
from aligncoder_lsp.evaluation.metrics import edit_similarity
from aligncoder_lsp.evaluation.tasks import load_tasks, materialize, prefix_only
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest
from aligncoder_lsp.postprocess import statement_end
from aligncoder_lsp.retrieval.selective import SelectivePolicy, selective_features

_CALL = re.compile(r"[A-Za-z_][\w.]*\(")


def sample_spans(root: Path, count: int, excluded: set[str], rng: random.Random) -> list[tuple[Path, str, str]]:
    """(file, prefix, masked statement) triples: statements that call something, with at
    least 20 lines before them."""
    files = sorted(p for p in root.rglob("*.py") if p.relative_to(root).as_posix() not in excluded)
    rng.shuffle(files)
    spans = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        choices = [n for n in range(20, len(lines)) if _CALL.search(lines[n]) and not lines[n].lstrip().startswith(("#", "@", "def ", "class "))]
        if not choices:
            continue
        number = rng.choice(choices)
        length = statement_end(lines[number:number + 8], 0) or 1
        indent = len(lines[number]) - len(lines[number].lstrip())
        prefix = "\n".join(lines[:number] + [lines[number][:indent]])
        truth = "\n".join(lines[number:number + length])[indent:]
        spans.append((path, prefix, truth))
        if len(spans) == count:
            break
    return spans


def collect(repos: Path, names: list[str], per_repo: int, excluded: dict[str, set[str]], settings: Settings,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, ES without retrieval and ES with retrieval for every sampled span."""
    from tqdm import tqdm

    rng = random.Random(seed)
    engine = CompletionEngine(settings, WorkspaceIndex(settings.index))
    features, plain, retrieved = [], [], []
    with tempfile.TemporaryDirectory(prefix="aligncoder-calibrate-") as workdir:
        bar = tqdm(total=per_repo * len(names), desc="calibrate", disable=not sys.stderr.isatty(), file=sys.stderr)
        for name in names:
            root = materialize(repos, name, Path(workdir))
            index = WorkspaceIndex(settings.index)
            index.build([root])
            engine.index = index
            for path, prefix, truth in sample_spans(root, per_repo, excluded.get(name, set()), rng):
                with prefix_only(index, path, prefix):
                    lines = prefix.split("\n")
                    request = CompletionRequest(str(path), prefix, len(lines) - 1, len(lines[-1]))
                    first, generation = engine.attempt(request, threading.Event())
                    features.append(selective_features(generation, prefix, str(path), index))
                    plain.append(edit_similarity(first.text, truth))
                    result = engine.complete(request, threading.Event(), "aligncoder")
                    retrieved.append(edit_similarity(result.text, truth))
                bar.update()
        bar.close()
    return np.array(features), np.array(plain), np.array(retrieved)


def choose_threshold(probabilities: np.ndarray, plain: np.ndarray, retrieved: np.ndarray,
                     max_rate: float) -> tuple[float, float, float]:
    """(threshold, mean ES, retrieval rate) of the best threshold within the rate."""
    best = (1.0, float(plain.mean()), 0.0)
    for threshold in np.unique(np.round(probabilities, 4)):
        chosen = probabilities >= threshold
        rate = float(chosen.mean())
        score = float(np.where(chosen, retrieved, plain).mean())
        if rate <= max_rate and score > best[1]:
            best = (float(threshold), score, rate)
    return best


def main(args, settings: Settings) -> int:
    require_bench("tqdm")
    excluded: dict[str, set[str]] = {}
    if args.exclude_tasks:
        for task in load_tasks(args.exclude_tasks):
            excluded.setdefault(task.repo, set()).add(task.file_path)
    names = args.repo or sorted(p.name.removesuffix(".tar.gz") for p in args.repos.iterdir()
                                if p.is_dir() or p.name.endswith(".tar.gz"))
    features, plain, retrieved = collect(args.repos, names, args.per_repo, excluded, settings, args.seed)
    labels = (retrieved > plain).astype(float)
    policy = SelectivePolicy.fit(features, labels)
    probabilities = np.array([policy.probability(row) for row in features])
    policy.threshold, es, rate = choose_threshold(probabilities, plain, retrieved, args.max_retrieval)
    policy.notes = {
        "created": datetime.date.today().isoformat(),
        "repositories": names,
        "spans": len(labels),
        "retrieval_helps_rate": round(float(labels.mean()), 3),
        "es_without_retrieval": round(float(plain.mean()), 4),
        "es_always_retrieving": round(float(retrieved.mean()), 4),
        "es_selective_at_threshold": round(es, 4),
        "retrieval_rate_at_threshold": round(rate, 3),
        "training_accuracy": round(float(((probabilities >= 0.5) == labels).mean()), 3),
    }
    policy.save(args.out)
    if args.dump:
        args.dump.write_text(json.dumps({"features": features.tolist(), "plain": plain.tolist(),
                                         "retrieved": retrieved.tolist()}))
    print(json.dumps(policy.notes, indent=2))
    return 0
