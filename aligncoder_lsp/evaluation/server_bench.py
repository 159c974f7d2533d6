"""Latency of the real server process on a real repository.

Starts ``aligncoder-lsp serve`` as an editor would, opens task files (reduced to the text
before the cursor, so nothing after it is indexed), and measures: start to first completion,
per-request latency (p50/p90), the latency of the next request after one more typed
character (the editor's common case, where the prompt's KV cache is reused) and the
server's peak memory (VmHWM); with several sessions, that many editors at once sharing one
engine. ``cancellation`` measures how soon a llama.cpp engine stops generating after the editor
cancels, from the engine's own ``/slots``. Latency figures say nothing of accuracy: see ``eval``.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aligncoder_lsp.evaluation import process_stats
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.evaluation.tasks import Task, load_tasks, materialize, reduce_to_prefix


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(tasks_file: Path, repos: Path, repo: str, requests: int, server_args: list[str], sessions: int = 1) -> dict:
    """``sessions`` editors at once, each a server process on a copy of its own, sharing the
    tasks round-robin (and the engine, when ``server_args`` name one); measured once every
    server has indexed."""
    tasks = load_tasks(tasks_file, repo=repo)[:requests]
    if not tasks:
        raise SystemExit(f"no tasks for repository {repo} in {tasks_file}")
    with tempfile.TemporaryDirectory(prefix="aligncoder-bench-") as workdir:
        roots = [materialize(repos, repo, Path(workdir) / f"session-{number}") for number in range(sessions)]
        for root in roots:
            for task in tasks:
                # Every target file is reduced before the server starts: no task sees a later one's answer.
                (root / task.file_path).unlink(missing_ok=True)
        started = time.perf_counter()
        peers = [RpcPeer(*server_args, stderr=subprocess.DEVNULL) for _ in roots]
        try:
            for peer, root in zip(peers, roots):
                peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}})
            for peer in peers:
                peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end")
            indexed = time.perf_counter() - started
            with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
                runs = list(pool.map(lambda number: _session(peers[number], roots[number], tasks[number::sessions]),
                                     range(sessions)))
            first = min(run.first for run in runs) - started
            memory = _memory(peers[0])
            for peer in peers:
                peer.request("shutdown")
                peer.notify("exit")
        finally:
            for peer in peers:
                peer.close()
    return {
        "sessions": sessions,
        "requests": sum(len(run.latencies) for run in runs),
        "start_to_indexed_s": round(indexed, 2),
        "start_to_first_completion_s": round(first, 2),
        "latency_ms": _summary([value for run in runs for value in run.latencies]),
        "next_keystroke_latency_ms": _summary([value for run in runs for value in run.keystrokes]),
        **memory,
    }


@dataclass
class _Session:
    latencies: list[float] = field(default_factory=list)
    keystrokes: list[float] = field(default_factory=list)
    first: float = math.inf


def _session(peer: RpcPeer, root: Path, tasks: list[Task]) -> _Session:
    """One editor: at each task's cursor a cold request, then one more typed character and the next."""
    session = _Session()
    for task in tasks:
        path = reduce_to_prefix(root, task)
        uri = path.as_uri()
        peer.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": task.language, "version": 1, "text": task.prefix}})
        line, column = task.cursor
        sent = time.perf_counter()
        response = peer.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": column}}, timeout=600)
        session.latencies.append((time.perf_counter() - sent) * 1000)
        session.first = min(session.first, time.perf_counter())
        if "error" in response:
            raise RuntimeError(f"{task.id}: {response['error']}")
        typed = task.groundtruth[:1]
        peer.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                               "contentChanges": [{"text": task.prefix + typed}]})
        sent = time.perf_counter()
        peer.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": column + len(typed)}}, timeout=600)
        session.keystrokes.append((time.perf_counter() - sent) * 1000)
        peer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        path.unlink()
    return session


def _memory(peer: RpcPeer) -> dict:
    """Peak memory of one server process and its workers."""
    rss = process_stats.peak_rss_mib(peer.process.pid)
    workers = [process_stats.peak_rss_mib(child) for child in process_stats.descendants(peer.process.pid)]
    return {"server_peak_rss_mib": None if rss is None else round(rss),
            "worker_processes_peak_rss_mib": [round(value) for value in workers if value is not None]}


def _summary(values: list[float]) -> dict:
    return {"p50": round(statistics.median(values)), "p90": round(percentile(values, 0.9)),
            "mean": round(statistics.fmean(values)), "max": round(max(values))}


def _server_args(args) -> list[str]:
    """The server's command line: this command's model, engine, threads and settings file."""
    server_args = []
    for flag, value in (("--model", args.model), ("--engine", args.engine), ("--threads", args.threads),
                        ("--config", args.config)):
        if value:
            server_args += [flag, str(value)]
    return server_args


def main(args) -> int:
    report = run(args.tasks, args.repos, args.repo, args.requests, _server_args(args), args.sessions)
    print(json.dumps(report, indent=2))
    return 0


CANCEL_PROMPT = "PRIMES = [\n    2,\n    3,\n    5,\n    7,\n    "
"""A prompt small models continue for hundreds of tokens (one number per line)."""


def cancellation(engine: str, trials: int, server_args: list[str]) -> dict:
    """How soon a llama.cpp engine stops generating once an editor cancels: the server (with
    ``--engine``) streams a long answer; after the engine has decoded some tokens the editor
    sends ``$/cancelRequest``, and the engine's ``/slots`` is polled until no slot works."""
    slots = f"{engine.rstrip('/')}/slots"

    def decoding() -> int | None:
        """Tokens the busy slot has decoded; None when no slot is busy."""
        busy = [slot for slot in httpx.get(slots, timeout=5).json() if slot["is_processing"]]
        return busy[0]["next_token"][0]["n_decoded"] if busy else None

    stops, overrun = [], []
    with tempfile.TemporaryDirectory(prefix="aligncoder-cancel-") as workdir:
        root = Path(workdir).resolve()
        uri = (root / "primes.py").as_uri()
        lines = CANCEL_PROMPT.split("\n")
        position = {"line": len(lines) - 1, "character": len(lines[-1])}
        peer = RpcPeer(*server_args, stderr=subprocess.DEVNULL)
        try:
            peer.initialize(root.as_uri(), {}, {"retrieval": {"enabled": False}, "model": {"maxTokens": 1024},
                                                "completion": {"maxLines": 400}})
            for trial in range(trials):
                peer.notify("textDocument/didOpen", {"textDocument": {
                    "uri": uri, "languageId": "python", "version": 1, "text": CANCEL_PROMPT}})
                peer.send({"id": f"long-{trial}", "method": "textDocument/completion",
                           "params": {"textDocument": {"uri": uri}, "position": position}})
                deadline = time.monotonic() + 120
                while (decoded := decoding()) is None or decoded < 32:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the engine did not begin the request within 2 minutes")
                    time.sleep(0.005)
                cancelled = time.perf_counter()
                peer.notify("$/cancelRequest", {"id": f"long-{trial}"})
                last = decoded
                while (now := decoding()) is not None:
                    last = now
                    time.sleep(0.005)
                stops.append((time.perf_counter() - cancelled) * 1000)
                overrun.append(last - decoded)
                peer.response(f"long-{trial}", timeout=60)
                peer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            peer.request("shutdown")
            peer.notify("exit")
        finally:
            peer.close()
    return {"trials": trials, "engine_stopped_after_cancel_ms": _summary(stops),
            "tokens_decoded_after_cancel": _summary(overrun)}


def main_cancel(args) -> int:
    if not args.engine:
        raise SystemExit("bench cancel needs --engine URL (a llama.cpp server: its /slots show it working)")
    print(json.dumps(cancellation(args.engine, args.trials, _server_args(args)), indent=2))
    return 0
