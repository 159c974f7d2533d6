"""Figures of the workspace index on a real repository (and a synthetic large workspace).

* cold build and warm restart of base + dependency + BM25 index;
* a saved file re-indexed and visible to retrieval, end to end through the real server
  (write on disk -> watchdog -> index -> ``aligncoder.search`` finds it): p50 / p95;
* embedding throughput: float32 against the configured precision at the same maximum
  sequence length, in the same run, with the rankings compared;
* a synthetic workspace of many files: build time and peak memory (in a child process),
  how fast the server answers while it builds that index, and how fast ``exit`` ends it.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aligncoder_lsp.config import IndexSettings, RetrieverSettings
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.evaluation.server_bench import percentile
from aligncoder_lsp.index.workspace_index import WorkspaceIndex


def build_figures(root: Path, cache: Path) -> dict:
    cold = WorkspaceIndex(IndexSettings(), WorkspaceIndex.cache_file_for(cache, [root]))
    stats = cold.build([root])
    warm_started = time.perf_counter()
    warm = WorkspaceIndex(IndexSettings(), WorkspaceIndex.cache_file_for(cache, [root]))
    warm_stats = warm.build([root])
    return {
        "files": stats.files, "snippets": stats.snippets, "dependency_definitions": stats.dependency_definitions,
        "cold_build_s": round(stats.seconds, 2),
        "cold_phases_s": {k: round(v, 3) for k, v in stats.phases.items()},
        "warm_restart_s": round(time.perf_counter() - warm_started, 3),
        "warm_from_cache": warm_stats.loaded_from_cache,
    }


def reindex_latency(root: Path, cache: Path, samples: int) -> dict:
    """Write a new identifier into a file; time until the server's retrieval finds it there."""
    files = sorted(p for p in root.rglob("*.py") if p.is_file() and ".git" not in p.parts)
    chosen = random.Random(0).sample(files, min(samples, len(files)))
    peer = RpcPeer("--cache-dir", str(cache), "--model", "/nonexistent.gguf", stderr=subprocess.DEVNULL)
    timings = []
    try:
        peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}},
                        {"retriever": {"background": False}})
        peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end")
        for number, path in enumerate(chosen):
            marker = f"zzmarker{number}qq"
            relative = path.relative_to(root).as_posix()
            started = time.perf_counter()
            with path.open("a", encoding="utf-8") as handle:
                handle.write(f"\n{marker} = {number}\n")
            while True:
                hits = peer.request("workspace/executeCommand", {
                    "command": "aligncoder.search", "arguments": [marker, 3]})["result"]
                if any(hit["path"] == relative for hit in hits):
                    break
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"{relative} never became visible")
                time.sleep(0.005)
            timings.append((time.perf_counter() - started) * 1000)
        peer.request("shutdown")
        peer.notify("exit")
    finally:
        peer.close()
    return {"samples": len(timings), "p50_ms": round(statistics.median(timings)),
            "p95_ms": round(percentile(timings, 0.95)), "max_ms": round(max(timings))}


def embedding_figures(root: Path, limit: int, settings: RetrieverSettings) -> dict:
    from aligncoder_lsp.index.embeddings import Encoder

    index = WorkspaceIndex(IndexSettings())
    index.build([root])
    texts = [text for _, text in index.pending_embeddings(limit)]
    results, vectors = {}, {}
    for precision in dict.fromkeys(["float32", Encoder(precision=settings.precision).precision]):
        encoder = Encoder(settings.model, precision, settings.max_tokens, settings.threads or 0)
        encoder.encode(texts[:8])  # load and warm up
        started = time.perf_counter()
        vectors[precision] = encoder.encode(texts)
        results[precision] = round(len(texts) / (time.perf_counter() - started), 1)
    report = {"snippets": len(texts), "max_tokens": settings.max_tokens, "snippets_per_s": results}
    if len(vectors) == 2:
        base, fast = vectors["float32"], vectors[next(k for k in vectors if k != "float32")]
        queries = min(64, len(texts))
        agree = []
        for row in range(queries):
            top_base = set(np.argsort(-(base @ base[row]))[1:6])
            top_fast = set(np.argsort(-(fast @ fast[row]))[1:6])
            agree.append(len(top_base & top_fast) / 5)
        report["speedup"] = round(results[next(k for k in results if k != "float32")] / results["float32"], 2)
        report["cosine_to_float32_min"] = round(float((base * fast).sum(1).min()), 4)
        report["top5_agreement"] = round(float(np.mean(agree)), 3)
    return report


def synthetic_workspace(target: Path, files: int, source: Path, lines: int = 100) -> None:
    """``files`` Python files of up to ``lines`` lines, made by cycling the repository's
    files into folders of 500."""
    sources = ["\n".join(p.read_text(encoding="utf-8", errors="replace").split("\n")[:lines])
               for p in sorted(source.rglob("*.py"))[:400]]
    for number in range(files):
        folder = target / f"pkg{number // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module{number}.py").write_text(f"# generated copy {number}\n" + sources[number % len(sources)])


def large_workspace_figures(root: Path, files: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="aligncoder-large-") as workdir:
        target = Path(workdir) / "ws"
        synthetic_workspace(target, files, root)
        command = [sys.executable, "-m", "aligncoder_lsp", "index", str(target), "--json",
                   "--cache-dir", str(Path(workdir) / "cache")]
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        responsive = responsiveness_figures(target, Path(workdir) / "server-cache")
    return {"files": report["files"], "snippets": report["snippets"],
            "build_s": report["total_seconds"], "peak_rss_mib": report["peak_rss_mib"], **responsive}


def responsiveness_figures(root: Path, cache: Path) -> dict:
    """While the server builds (and then saves) the index of ``root`` from scratch: how fast
    a command and a cancelled request are answered; and how long ``exit`` takes to end the
    process in the middle of a build and once it is idle."""
    def exit_seconds(peer: RpcPeer) -> float:
        started = time.perf_counter()
        peer.notify("exit")
        peer.wait(30)
        return round(time.perf_counter() - started, 3)

    def building(peer: RpcPeer) -> bool:
        return not any(n["method"] == "$/progress" and n["params"]["value"]["kind"] == "end" for n in peer.notifications)

    arguments = ("--cache-dir", str(cache), "--model", "/nonexistent.gguf")
    command_ms, cancelled_ms = [], []
    peer = RpcPeer(*arguments, stderr=subprocess.DEVNULL)
    try:
        peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}}, {"retriever": {"background": False}})
        ids = iter(range(10**6))
        while building(peer):
            started = time.perf_counter()
            peer.request("workspace/executeCommand", {"command": "aligncoder.indexStatus", "arguments": []})
            command_ms.append((time.perf_counter() - started) * 1000)
            request_id = f"cancelled-{next(ids)}"
            started = time.perf_counter()
            peer.send({"id": request_id, "method": "textDocument/completion", "params": {
                "textDocument": {"uri": (root / "pkg0" / "module0.py").as_uri()}, "position": {"line": 0, "character": 0}}})
            peer.notify("$/cancelRequest", {"id": request_id})
            peer.response(request_id)
            cancelled_ms.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
        idle_exit = exit_seconds(peer)
    finally:
        peer.close()
    shutil.rmtree(cache, ignore_errors=True)
    peer = RpcPeer(*arguments, stderr=subprocess.DEVNULL)
    try:
        peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}}, {"retriever": {"background": False}})
        peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "report")
        building_exit = exit_seconds(peer)
    finally:
        peer.close()
    return {"during_build": {"requests": len(command_ms),
                             "command_ms_p50": round(percentile(command_ms, 0.5), 1),
                             "command_ms_p99": round(percentile(command_ms, 0.99), 1),
                             "command_ms_max": round(max(command_ms, default=0), 1),
                             "cancelled_request_ms_p50": round(percentile(cancelled_ms, 0.5), 1),
                             "cancelled_request_ms_p99": round(percentile(cancelled_ms, 0.99), 1),
                             "cancelled_request_ms_max": round(max(cancelled_ms, default=0), 1)},
            "exit_s": {"during_build": building_exit, "idle": idle_exit}}


def main(args) -> int:
    root = args.path.resolve()
    report: dict = {"workspace": str(root)}
    with tempfile.TemporaryDirectory(prefix="aligncoder-bench-") as workdir:
        work = Path(workdir)
        copy = work / root.name
        shutil.copytree(root, copy, symlinks=True)
        report["build"] = build_figures(copy, work / "cache")
        report["reindex_visible"] = reindex_latency(copy, work / "server-cache", args.samples)
    settings = RetrieverSettings()
    report["embeddings"] = embedding_figures(root, args.embed_limit, settings)
    if args.large_files:
        report["large_workspace"] = large_workspace_figures(root, args.large_files)
    report["peak_rss_mib_of_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))
    return 0
