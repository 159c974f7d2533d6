"""*candidates*: for every hole, exactly what the server would re-rank at that cursor.

The repository is indexed once, in memory; for each hole its file is replaced by the text
before the cursor (nothing at or after the cursor enters the index, the query or the
dependency signatures) and the serving engine selects the coarse candidates and makes the
sampler's drafts with the serving settings, and the selective policy's features of a
context-free first attempt. Each candidate is stored with its text (what
the retriever embeds) and the context block the prompt shows for it alone; a "no context
needed" stop item closes the list.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import attrs

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest
from aligncoder_lsp.retrieval.selective import selective_features
from aligncoder_lsp.training.corpus import Repository, files_with_holes, index_settings
from aligncoder_lsp.training.headroom import STOP
from aligncoder_lsp.training.store import CANDIDATES, Hole, Progress, Run, Shard
from aligncoder_lsp.workspace.files import language_of

logger = logging.getLogger(__name__)

SERVING_ONLY = {"enabled", "mode", "lexical_weight", "threshold", "policy"}
"""Retrieval settings that do not change what is re-ranked."""


def candidate_record(engine: CompletionEngine, hole: Hole, path: str, prefix: str, cancel: threading.Event) -> dict:
    """The re-ranking inputs of one hole, with ``path``'s text in the index already cut to ``prefix``."""
    language = language_of(path) or "python"
    request = CompletionRequest(path, prefix, hole.line, hole.column, language)
    engine.drafter().reseed(int(hashlib.sha1(hole.id.encode()).hexdigest()[:8], 16))
    inputs = engine.rerank_inputs(request, cancel)
    items = []
    for snippet, score, source in inputs.candidates:
        items.append({
            "id": f"{source}:{engine.index.relative(snippet.path)}:{snippet.start + 1}-{snippet.end}",
            "source": source,
            "score": round(score, 3),
            "text": snippet.text,
            "shown": engine.context_block([(snippet, score, source)], language),
        })
    items.append({"id": STOP, "source": STOP, "score": 0.0, "text": "", "shown": ""})
    _, first = engine.attempt(request, cancel)
    selective = selective_features(first, prefix, path, engine.index)
    return {"hole": hole.id, "query": inputs.query, "drafts": inputs.drafts,
            "enhanced_query": inputs.enhanced_query(), "candidates": items,
            "selective": [round(float(value), 4) for value in selective]}


def run_candidates(run: Run, repositories: dict[str, Repository], settings: Settings, shard: Shard,
                   limit: int | None = None, log_every: int = 10) -> int:
    """Make the candidates of the shard's holes not done yet; returns how many were made."""
    manifest = run.manifest()
    run.settle("candidates", {"retrieval": {k: v for k, v in attrs.asdict(settings.retrieval).items() if k not in SERVING_ONLY},
                              "completion": attrs.asdict(settings.completion), "block_lines": settings.index.block_lines,
                              "generator": settings.model.generator})
    done = set(run.records(CANDIDATES))
    todo = [hole for hole in run.holes(shard) if hole.id not in done]
    todo = todo[:limit] if limit is not None else todo
    output = run.shard_file(CANDIDATES, shard)
    output.repair()
    indexing = index_settings(settings.index, manifest.get("exclude", []))
    engine = CompletionEngine(settings, WorkspaceIndex(indexing))
    progress = Progress("candidates", len(todo), log_every, already=len(done))
    cancel = threading.Event()
    digests = {entry["name"]: entry["files"] for entry in manifest["repositories"]}
    indexed_root = None
    for root, relative, source, holes in files_with_holes(todo, repositories, manifest, indexing, "candidates"):
        if root != indexed_root:  # one in-memory index per repository
            engine.index = WorkspaceIndex(indexing)
            engine.index.build([root])
            indexed_root = root
        files = digests[holes[0].repo]
        copies = [root / other for other, digest in files.items() if digest == files[relative] and other != relative]
        for copy in copies:  # a copy of the file would show the text after the cursor
            engine.index.remove_file(str(copy))
        path = str(root / relative)
        for hole in holes:
            if not source.text.startswith(hole.target, hole.offset):
                logger.warning("candidates: %s does not match its file; skipped", hole.id)
                continue
            started = time.perf_counter()
            prefix = source.text[: hole.offset]
            engine.index.set_file(path, prefix)
            record = candidate_record(engine, hole, path, prefix, cancel)
            record["s"] = round(time.perf_counter() - started, 2)
            output.append(record)
            progress.tick()
        engine.index.set_file(path, source.text)
        for copy in copies:  # same digest: the same text
            engine.index.set_file(str(copy), source.text)
    return progress.done
