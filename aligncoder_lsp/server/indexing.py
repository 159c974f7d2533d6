"""The index feature: builds, watches, re-indexes, embeds and persists the workspace index.

All index work runs on the feature's own threads. The event loop only schedules it and reads
lock-free counters, so a long build, a checkout storm or a save never delays a request or a
cancellation, and ``shutdown`` stops a build between two files.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from lsprotocol import types
from pygls.uris import to_fs_path

from aligncoder_lsp.config import Applies
from aligncoder_lsp.index.embeddings import BACKGROUND_BATCH
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.workspace.files import is_indexable, language_of
from aligncoder_lsp.workspace.watcher import WorkspaceWatcher

if TYPE_CHECKING:
    from aligncoder_lsp.server.server import AlignCoderServer

logger = logging.getLogger(__name__)

SAVE_DELAY = 10.0
"""Seconds of quiet before index changes are written to the cache."""


class IndexFeature:
    def __init__(self, server: AlignCoderServer):
        self.server = server
        self.index = WorkspaceIndex(server.settings.index)
        self.roots: list[Path] = []
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="index")
        self.embed_executor = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self.stopping = threading.Event()
        """Set on ``shutdown``: builds and change batches stop between two files."""
        self.watcher: WorkspaceWatcher | None = None
        self.built = False
        self._embedding = False
        self._save_timer: asyncio.TimerHandle | None = None
        self._reindex_timers: dict[str, asyncio.TimerHandle] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def initialize(self, roots: list[Path]) -> None:
        self.roots = roots
        if roots:
            self.index.cache_file = self.index.cache_file_for(self.server.settings.resolved_cache_dir(), roots)

    async def build(self) -> None:
        """Index every workspace folder (from the cache where it is current), then keep
        the index current with the disk and embed what lacks a vector."""
        if not self.roots or self.stopping.is_set():
            return
        server = self.server
        token = "aligncoder/index"
        progress = await server.begin_progress(token, "Indexing workspace")
        loop = asyncio.get_running_loop()

        def report(done: int, total: int) -> None:
            if progress and (done % 200 == 0 or done == total):
                percent = int(100 * done / max(total, 1))
                loop.call_soon_threadsafe(server.work_done_progress.report, token,
                                          types.WorkDoneProgressReport(message=f"{done}/{total} files", percentage=percent))

        # Watch first: changes made while the index builds are applied right after it.
        server.spawn(lambda: self._watch(loop), self.executor, "watching the workspace")

        def build():
            server.engine.encoder()  # the build loads the stored vectors of this retriever
            return self.index.build(self.roots, report, stop=self.stopping)

        stats = await server.spawn(build, self.executor, "indexing")
        self.built = True
        logger.info("indexed %d files, %d snippets in %.2f s (skipped: %s)",
                    stats.files, stats.snippets, stats.seconds, dict(stats.skipped) or "none")
        if progress:
            server.work_done_progress.end(token, types.WorkDoneProgressEnd(
                message=f"{stats.files} files, {stats.snippets} snippets"))
        self.schedule_embedding()

    def shutdown(self) -> None:
        """Stop background work while the event loop still runs."""
        self.stopping.set()
        for timer in [self._save_timer, *self._reindex_timers.values()]:
            if timer is not None:
                timer.cancel()
        self._reindex_timers.clear()

    def close(self) -> None:
        """Release threads and write what changed since the last save (after the loop ended)."""
        self.stopping.set()
        if self.watcher is not None:
            self.watcher.stop()
        for executor in (self.executor, self.embed_executor):
            executor.shutdown(wait=False, cancel_futures=True)
        if self._save_timer is not None:
            self.index.save()

    def settings_changed(self, applies: set[Applies]) -> None:
        """Apply changed index settings (a rebuild) and retriever settings (the next
        encoder use switches to its own vector space, embedded in the background)."""
        if Applies.INDEX in applies and self.roots and self.server.settings.retrieval.enabled:
            logger.info("index settings changed: re-indexing the workspace")
            self.server.track(asyncio.get_running_loop().create_task(self.build()), "re-indexing")
        else:
            self.schedule_embedding()

    # -- open documents ------------------------------------------------------------------

    def indexable(self, uri: str) -> Path | None:
        """The resolved path of ``uri`` if it is a source file of a workspace folder that
        discovery would index (ignored files, e.g. under ``.venv/``, are not)."""
        root, path = self.locate(uri)
        if root is None or language_of(path) is None:
            return None
        settings = self.server.settings.index
        return path if is_indexable(root, path, settings.include, settings.exclude) else None

    def locate(self, uri: str) -> tuple[Path | None, Path]:
        """The workspace folder holding ``uri`` (None outside every folder) and its resolved path."""
        path = Path(to_fs_path(uri) or unquote(uri)).resolve()
        root = next((root for root in self.roots if path.is_relative_to(root)), None)
        return root, path

    def is_open(self, path: Path) -> bool:
        """Open buffers override the disk."""
        documents = list(self.server.workspace.text_documents)
        return any(Path(to_fs_path(uri) or "").resolve() == path for uri in documents)

    def document_changed(self, uri: str, delay: float = 0.3) -> None:
        """Re-index an open document shortly after its last change (trailing debounce)."""
        if (timer := self._reindex_timers.pop(uri, None)) is not None:
            timer.cancel()
        if not self.stopping.is_set():
            self._reindex_timers[uri] = asyncio.get_running_loop().call_later(delay, self._reindex_now, uri)

    def _reindex_now(self, uri: str) -> None:
        self._reindex_timers.pop(uri, None)
        path = self.indexable(uri)
        document = self.server.open_document(uri)
        if path is not None and document is not None:
            text = document.source
            self._update(lambda: self.index.set_file(str(path), text), "re-indexing")

    def document_closed(self, uri: str) -> None:
        """The buffer's unsaved text no longer counts: back to the file on disk."""
        if (timer := self._reindex_timers.pop(uri, None)) is not None:
            timer.cancel()
        if (path := self.indexable(uri)) is not None:
            self._update(lambda: self.index.refresh_file(path), "re-indexing")

    def _update(self, work, what: str) -> None:
        done = self.server.spawn(work, self.executor, what)
        done.add_done_callback(lambda _: self.schedule_save())
        done.add_done_callback(lambda _: self.schedule_embedding())

    # -- the disk --------------------------------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Apply file creations, edits, deletions and moves on disk to the index (starting
        the observer walks the tree, so this runs on the index thread)."""
        if self.stopping.is_set() or self.watcher is not None:
            return
        self.watcher = WorkspaceWatcher(
            self.roots, lambda paths: loop.call_soon_threadsafe(self._apply_disk_changes, paths))
        self.watcher.start()

    def _apply_disk_changes(self, paths: set[Path]) -> None:
        def apply() -> None:
            changed = self.index.apply_changes(paths, skip_path=self.is_open, stop=self.stopping)
            if changed:
                logger.info("applied changes of %d paths on disk (%d files)", len(paths), changed)

        self._update(apply, "applying file changes")

    # -- persistence and vectors -----------------------------------------------------------

    def schedule_save(self, delay: float = SAVE_DELAY) -> None:
        """Write index changes once they have settled (a stale cache is only slower to
        reload, never wrong: every file is checked on restart)."""
        if self.stopping.is_set():
            return
        if self._save_timer is not None:
            self._save_timer.cancel()
        self._save_timer = asyncio.get_running_loop().call_later(delay, self._save_now)

    def _save_now(self) -> None:
        self._save_timer = None
        self.server.spawn(self.index.save, self.executor, "saving the index")

    def schedule_embedding(self) -> None:
        """Embed snippets that have no vector yet, in the background (one run at a time)."""
        if self.server.settings.retriever.background and not self._embedding and not self.stopping.is_set():
            self._embedding = True
            self.server.track(asyncio.get_running_loop().create_task(self._embed_pending()), "embedding")

    async def _embed_pending(self) -> None:
        """Embed until no snippet lacks a vector (edits made meanwhile are picked up too)."""
        embedded = 0
        try:
            while not self.stopping.is_set():
                pending = await self.server.spawn(lambda: self.index.pending_embeddings(limit=10**9),
                                                  self.embed_executor, "listing snippets to embed")
                if not pending or not await self._embed(pending):
                    break
                embedded += len(pending)
        finally:
            self._embedding = False
        if embedded:
            self.schedule_save()

    async def _embed(self, pending: list[tuple[bytes, str]]) -> bool:
        server = self.server
        encoder = await server.spawn(server.engine.encoder, self.embed_executor, "starting the retriever")
        token = f"aligncoder/embed/{id(pending)}"
        progress = len(pending) > 64 and await server.begin_progress(token, "Embedding snippets")

        def embed(keys: list[bytes], texts: list[str]) -> None:
            vectors = encoder.encode(texts)
            if server.engine.encoder() is encoder:  # else the retriever changed: its own vectors from now on
                self.index.add_embeddings(keys, vectors)

        for start in range(0, len(pending), BACKGROUND_BATCH):
            while server.completions_running() and not self.stopping.is_set():  # completions get the CPU first
                await asyncio.sleep(0.05)
            if self.stopping.is_set():
                return False
            keys, texts = zip(*pending[start:start + BACKGROUND_BATCH])
            try:
                await server.spawn(lambda: embed(list(keys), list(texts)), self.embed_executor, "embedding")
            except ModelUnavailable as error:
                server.report_model_error(error)
                return False
            if progress:
                done = min(start + BACKGROUND_BATCH, len(pending))
                server.work_done_progress.report(token, types.WorkDoneProgressReport(
                    message=f"{done}/{len(pending)} snippets", percentage=int(100 * done / len(pending))))
        if progress:
            server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"{len(pending)} snippets embedded"))
        return True
