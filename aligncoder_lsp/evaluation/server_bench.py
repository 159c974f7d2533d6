"""Latency of the real server process on a real repository.

Starts ``aligncoder-lsp serve`` as an editor would, opens task files (reduced to the text
before the cursor, so nothing after it is indexed), and measures: start to first completion,
per-request latency (p50/p90), the latency of the next request after one more typed
character (the editor's common case, where the prompt's KV cache is reused) and the
server's peak memory (VmHWM). Latency figures say nothing of accuracy: see ``eval``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from aligncoder_lsp.evaluation import process_stats
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.evaluation.tasks import Task, load_tasks, materialize, reduce_to_prefix


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(tasks_file: Path, repos: Path, repo: str, requests: int, server_args: list[str]) -> dict:
    tasks = load_tasks(tasks_file, repo=repo)[:requests]
    if not tasks:
        raise SystemExit(f"no tasks for repository {repo} in {tasks_file}")
    with tempfile.TemporaryDirectory(prefix="aligncoder-bench-") as workdir:
        root = materialize(repos, repo, Path(workdir))
        for task in tasks:
            # Every target file is reduced before the server starts: no task sees a later one's answer.
            (root / task.file_path).unlink(missing_ok=True)
        started = time.perf_counter()
        peer = RpcPeer(*server_args, stderr=subprocess.DEVNULL)
        try:
            return _measure(peer, root, tasks, started)
        finally:
            peer.close()


def _measure(peer: RpcPeer, root: Path, tasks: list[Task], started: float) -> dict:
    peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}})
    peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end")
    indexed = time.perf_counter() - started
    latencies, keystrokes, first = [], [], None
    for task in tasks:
        path = reduce_to_prefix(root, task)
        uri = path.as_uri()
        peer.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": task.language, "version": 1, "text": task.prefix}})
        line, column = task.cursor
        sent = time.perf_counter()
        response = peer.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": column}}, timeout=300)
        latencies.append((time.perf_counter() - sent) * 1000)
        if first is None:
            first = time.perf_counter() - started
        if "error" in response:
            raise RuntimeError(f"{task.id}: {response['error']}")
        typed = task.groundtruth[:1]
        peer.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                               "contentChanges": [{"text": task.prefix + typed}]})
        sent = time.perf_counter()
        peer.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": column + len(typed)}}, timeout=300)
        keystrokes.append((time.perf_counter() - sent) * 1000)
        peer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        path.unlink()
    rss = process_stats.peak_rss_mib(peer.process.pid)
    workers = [process_stats.peak_rss_mib(child) for child in process_stats.descendants(peer.process.pid)]
    peer.request("shutdown")
    peer.notify("exit")
    return {
        "requests": len(latencies),
        "start_to_indexed_s": round(indexed, 2),
        "start_to_first_completion_s": round(first, 2),
        "latency_ms": _summary(latencies),
        "next_keystroke_latency_ms": _summary(keystrokes),
        "server_peak_rss_mib": None if rss is None else round(rss),
        "worker_processes_peak_rss_mib": [round(value) for value in workers if value is not None],
    }


def _summary(values: list[float]) -> dict:
    return {"p50": round(statistics.median(values)), "p90": round(percentile(values, 0.9)),
            "mean": round(statistics.fmean(values)), "max": round(max(values))}


def main(args) -> int:
    server_args = []
    for flag, value in (("--model", args.model), ("--engine", args.engine), ("--threads", args.threads)):
        if value:
            server_args += [flag, str(value)]
    report = run(args.tasks, args.repos, args.repo, args.requests, server_args)
    print(json.dumps(report, indent=2))
    return 0
