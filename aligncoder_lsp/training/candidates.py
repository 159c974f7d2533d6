"""*candidates*: for every hole, exactly what the server would re-rank at that cursor.

The repository is indexed once, in memory; for each hole its file is replaced by the text
before the cursor (nothing at or after the cursor enters the index, the query or the
dependency signatures) and the serving engine selects the coarse candidates and makes the
sampler's drafts with the serving settings. Each candidate is stored with its text (what
the retriever embeds) and the context block the prompt shows for it alone; a "no context
needed" stop item closes the list.
"""

from __future__ import annotations

import logging
import threading

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest
from aligncoder_lsp.training.corpus import Repository, index_settings, text_digest
from aligncoder_lsp.training.store import CANDIDATES, Hole, Progress, Run, Shard, group_by_file
from aligncoder_lsp.workspace.files import Skip, language_of, read_source

logger = logging.getLogger(__name__)

SERVING_ONLY = {"enabled", "mode", "lexical_weight", "threshold", "policy"}
"""Retrieval settings that do not change what is re-ranked."""

STOP = "stop"
"""Id of the stop item: the prompt without repository context."""


def candidate_record(engine: CompletionEngine, hole: Hole, path: str, prefix: str, cancel: threading.Event) -> dict:
    """The re-ranking inputs of one hole, with ``path``'s text in the index already cut to ``prefix``."""
    language = language_of(path) or "python"
    request = CompletionRequest(path, prefix, hole.line, hole.column, language)
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
    return {"hole": hole.id, "query": inputs.query, "drafts": inputs.drafts,
            "enhanced_query": inputs.enhanced_query(), "candidates": items}


def run_candidates(run: Run, repositories: dict[str, Repository], settings: Settings, shard: Shard,
                   limit: int | None = None, log_every: int = 10, engine: CompletionEngine | None = None) -> int:
    """Make the candidates of the shard's holes not done yet; returns how many were made."""
    manifest = run.manifest()
    run.settle("candidates", {"retrieval": {k: v for k, v in vars(settings.retrieval).items() if k not in SERVING_ONLY},
                              "completion": vars(settings.completion), "block_lines": settings.index.block_lines,
                              "generator": settings.model.generator})
    done = set(run.records(CANDIDATES))
    todo = [hole for hole in run.holes(shard) if hole.id not in done]
    todo = todo[:limit] if limit is not None else todo
    output = run.shard_file(CANDIDATES, shard)
    output.repair()
    indexing = index_settings(settings.index, manifest.get("exclude", []))
    engine = engine or CompletionEngine(settings, WorkspaceIndex(indexing))
    digests = {entry["name"]: entry["files"] for entry in manifest["repositories"]}
    progress = Progress("candidates", len(todo), log_every, already=len(done))
    cancel = threading.Event()
    for repo, files in group_by_file(todo).items():
        repository = repositories.get(repo)
        if repository is None:
            logger.warning("candidates: repository %s is not among --repos; skipping its %d files", repo, len(files))
            continue
        with repository.open() as root:
            index = WorkspaceIndex(indexing)
            index.build([root])
            engine.index = index
            for relative, holes in files.items():
                path = root / relative
                source = read_source(path, indexing.max_file_bytes)
                if isinstance(source, Skip) or text_digest(source.text) != digests.get(repo, {}).get(relative):
                    logger.warning("candidates: %s/%s changed since mining; skipping its %d holes",
                                   repo, relative, len(holes))
                    continue
                for hole in holes:
                    prefix = source.text[: hole.offset]
                    if not source.text.startswith(hole.target, hole.offset):
                        logger.warning("candidates: %s does not match its file; skipped", hole.id)
                        continue
                    index.set_file(str(path), prefix)
                    output.append(candidate_record(engine, hole, str(path), prefix, cancel))
                    progress.tick()
                index.set_file(str(path), source.text)
    return progress.done
