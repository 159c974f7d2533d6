"""``aligncoder-lsp eval``: the server's completion path on benchmark tasks, with metrics.

For every task the repository is indexed honestly: the target file holds only the task's
prefix while the task runs (the rest of the repository is as in the snapshot), and the
pipeline sees the prefix only, so nothing at or after the cursor reaches the index, the
prompt or the post-processing. The index is checked for that before every task, and a
task file can plant a canary token after the cursor that no snippet may hold.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from aligncoder_lsp.config import Settings
from aligncoder_lsp.evaluation import require_bench
from aligncoder_lsp.evaluation.metrics import edit_similarity, exact_match, identifier_f1
from aligncoder_lsp.evaluation.server_bench import percentile
from aligncoder_lsp.evaluation.tasks import Task, load_tasks, materialize, prefix_only
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest


def interleave(tasks: list[Task], limit: int | None) -> list[Task]:
    """Round-robin over repositories and levels, so a limit still spans all of them."""
    groups: dict[tuple[str, str], list[Task]] = defaultdict(list)
    for task in tasks:
        groups[(task.repo, task.level)].append(task)
    ordered = []
    queues = list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered[:limit] if limit else ordered


def run(tasks: list[Task], repos: Path, mode: str, settings: Settings, progress: bool) -> list[dict]:
    from tqdm import tqdm

    engine = CompletionEngine(settings, WorkspaceIndex(settings.index))
    results = []
    by_repo: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_repo[task.repo].append(task)
    bar = tqdm(total=len(tasks), desc=mode, disable=not progress, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="aligncoder-eval-") as workdir:
        for repo, repo_tasks in by_repo.items():
            root = materialize(repos, repo, Path(workdir))
            index = WorkspaceIndex(settings.index)
            index.build([root])
            engine.index = index
            for task in repo_tasks:
                results.append(_run_task(engine, index, root, task, mode))
                bar.update()
                bar.set_postfix(em=f"{statistics.fmean(r['em'] for r in results):.3f}")
    bar.close()
    return results


def _run_task(engine: CompletionEngine, index: WorkspaceIndex, root: Path, task: Task, mode: str) -> dict:
    target = root / task.file_path
    with prefix_only(index, target, task.prefix, task.canary):
        line, column = task.cursor
        request = CompletionRequest(str(target), task.prefix, line, column, task.language)
        started = time.perf_counter()
        result = engine.complete(request, threading.Event(), mode)
        latency = (time.perf_counter() - started) * 1000
    return {
        "id": task.id, "level": task.level,
        "em": exact_match(result.text, task.groundtruth),
        "es": edit_similarity(result.text, task.groundtruth),
        "id_f1": identifier_f1(result.text, task.groundtruth),
        "latency_ms": round(latency, 1),
        "retrieved": result.trace.retrieved,
        "prediction": result.text,
        "trace": result.trace.to_json(),
    }


def summarize(mode: str, results: list[dict]) -> dict:
    def scores(rows: list[dict]) -> dict:
        return {"n": len(rows),
                "em": round(statistics.fmean(r["em"] for r in rows), 4),
                "es": round(statistics.fmean(r["es"] for r in rows), 4),
                "id_f1": round(statistics.fmean(r["id_f1"] for r in rows), 4)}

    latencies = [r["latency_ms"] for r in results]
    levels = sorted({r["level"] for r in results})
    return {
        "mode": mode,
        **scores(results),
        "by_level": {level: scores([r for r in results if r["level"] == level]) for level in levels},
        "latency_ms": {"p50": round(statistics.median(latencies)), "p90": round(percentile(latencies, 0.9))},
        "retrieval_rate": round(statistics.fmean(float(r["retrieved"]) for r in results), 4),
        "per_task": results,
    }


def markdown(reports: list[dict]) -> str:
    """A table of every mode found beside the report."""
    levels = sorted({level for report in reports for level in report["by_level"]})
    head = ["mode", "n", "EM", "ES", "ID-F1"] + [f"EM {level}" for level in levels] + \
        ["p50 ms", "p90 ms", "retrieval rate"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for report in reports:
        cells = [report["mode"], str(report["n"]), f"{report['em']:.3f}", f"{report['es']:.3f}",
                 f"{report['id_f1']:.3f}"]
        cells += [f"{report['by_level'][level]['em']:.3f}" if level in report["by_level"] else "-" for level in levels]
        cells += [str(report["latency_ms"]["p50"]), str(report["latency_ms"]["p90"]), f"{report['retrieval_rate']:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [r["mode"] for r in reports]
    figure, (quality, latency) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    positions = range(len(modes))
    quality.bar([p - width / 2 for p in positions], [r["em"] for r in reports], width, label="EM")
    quality.bar([p + width / 2 for p in positions], [r["es"] for r in reports], width, label="ES")
    quality.set_xticks(list(positions), modes, rotation=20)
    quality.set_title("quality")
    quality.legend()
    latency.bar(modes, [r["latency_ms"]["p50"] for r in reports], label="p50")
    latency.set_title("latency p50 (ms)")
    latency.tick_params(axis="x", rotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(args, settings: Settings) -> int:
    require_bench("tqdm", "matplotlib")
    tasks = interleave(load_tasks(args.tasks), args.limit)
    results = run(tasks, args.repos, args.mode, settings, progress=sys.stderr.isatty())
    report = summarize(args.mode, results)
    out = args.out or Path(f"eval-{args.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    siblings = []
    for path in sorted(out.parent.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"mode", "em", "by_level"} <= data.keys():
            siblings.append(data)
    out.with_suffix(".md").write_text(f"# Evaluation ({args.tasks.name})\n\n" + markdown(siblings))
    plot(siblings, out.with_suffix(".png"))
    summary = {key: report[key] for key in ("mode", "n", "em", "es", "id_f1", "latency_ms", "retrieval_rate")}
    print(json.dumps(summary))
    return 0
