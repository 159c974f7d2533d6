"""The language server object: typed state, executors, background work, request dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcParseError
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from aligncoder_lsp import __version__
from aligncoder_lsp.config import Settings, merge
from aligncoder_lsp.index.embeddings import BACKGROUND_BATCH, EncoderProcess
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.pipeline import Completion, CompletionEngine, CompletionRequest
from aligncoder_lsp.server.positions import to_code_points
from aligncoder_lsp.server.protocol import AlignProtocol
from aligncoder_lsp.workspace.files import language_of
from aligncoder_lsp.workspace.watcher import WorkspaceWatcher

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AlignCoderServer(LanguageServer):
    def __init__(self, settings: Settings | None = None):
        super().__init__("aligncoder-lsp", __version__, protocol_cls=AlignProtocol, max_workers=4)
        self.settings = settings or Settings()
        self.index = WorkspaceIndex(self.settings.index)
        # One retriever for background embedding and fine retrieval: a worker process
        self.engine = CompletionEngine(self.settings, self.index, lambda *args: EncoderProcess(
            *args, threads=self.settings.retriever.threads))
        self.model_executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.index_executor = ThreadPoolExecutor(1, thread_name_prefix="index")
        self.embed_executor = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._embedding = False
        self._closing = False
        self._stop = threading.Event()
        """Set on shutdown: index builds and change batches return after the file at hand."""
        self.watcher: WorkspaceWatcher | None = None
        self._save_timer: asyncio.TimerHandle | None = None
        self.roots: list[Path] = []
        self.model_error: str | None = None
        self.last_trace: dict | None = None
        self._cancels: set[threading.Event] = set()
        self._tasks: set[asyncio.Future] = set()
        self._reindex_timers: dict[str, asyncio.TimerHandle] = {}

    # -- settings --------------------------------------------------------------------

    def apply_settings(self, data: Any) -> None:
        """Merge client settings (camelCase) and log what was ignored."""
        if data is None:
            return
        if isinstance(data, dict) and isinstance(data.get("aligncoder"), dict):
            data = data["aligncoder"]
        before = (self.settings.model.generator, self.settings.model.n_ctx,
                  self.settings.model.n_gpu_layers, self.settings.model.n_threads)
        for warning in merge(self.settings, data):
            logger.warning("%s", warning)
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning, warning))
        after = (self.settings.model.generator, self.settings.model.n_ctx,
                 self.settings.model.n_gpu_layers, self.settings.model.n_threads)
        if before != after:
            self.model_error = None
            self.model_executor.submit(self.engine.unload)

    # -- background work -------------------------------------------------------------

    def spawn(self, work: Callable[[], T], executor: ThreadPoolExecutor, what: str) -> asyncio.Future:
        """Run ``work`` on ``executor``; its failure is logged, never raised."""
        return self.track(asyncio.get_running_loop().run_in_executor(executor, work), what)

    def track(self, future: asyncio.Future, what: str) -> asyncio.Future:
        """Keep a reference to background work and log its failure."""
        self._tasks.add(future)

        def done(f: asyncio.Future) -> None:
            self._tasks.discard(f)
            if not f.cancelled() and f.exception() is not None:
                logger.error("%s failed", what, exc_info=f.exception())

        future.add_done_callback(done)
        return future

    async def index_workspace(self) -> None:
        token = "aligncoder/index"
        progress = await self._begin_progress(token, "Indexing workspace")
        loop = asyncio.get_running_loop()

        def report(done: int, total: int) -> None:
            if progress and (done % 200 == 0 or done == total):
                message = f"{done}/{total} files"
                percent = int(100 * done / max(total, 1))
                loop.call_soon_threadsafe(
                    self.work_done_progress.report, token,
                    types.WorkDoneProgressReport(message=message, percentage=percent))

        # Watch first: changes made while the index builds are applied right after it.
        self.spawn(lambda: self.watch_workspace(loop), self.index_executor, "watching the workspace")
        def build():
            self.engine.encoder()  # the build loads the vectors of this retriever
            return self.index.build(self.roots, report, stop=self._stop)

        stats = await self.spawn(build, self.index_executor, "indexing")
        logger.info("indexed %d files, %d snippets in %.2f s (skipped: %s)",
                    stats.files, stats.snippets, stats.seconds, dict(stats.skipped) or "none")
        if progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(
                message=f"{stats.files} files, {stats.snippets} snippets"))
        self.schedule_embedding()

    def schedule_embedding(self) -> None:
        """Embed snippets that have no vector yet, in the background (one run at a time)."""
        if self.settings.retriever.background and not self._embedding and not self._closing:
            self._embedding = True
            self.track(asyncio.get_running_loop().create_task(self._embed_pending()), "embedding")

    async def _embed_pending(self) -> None:
        """Embed until no snippet lacks a vector (edits made meanwhile are picked up too)."""
        try:
            while not self._closing and (pending := self.index.pending_embeddings(limit=10**9)):
                if not await self._embed(pending):
                    return
            if not self._closing:
                self.schedule_save(delay=0)
        finally:
            self._embedding = False

    async def _embed(self, pending: list[tuple[bytes, str]]) -> bool:
        encoder = self.engine.encoder()
        token = f"aligncoder/embed/{id(pending)}"
        progress = len(pending) > 64 and await self._begin_progress(token, "Embedding snippets")
        batch = BACKGROUND_BATCH
        for start in range(0, len(pending), batch):
            while self._cancels and not self._closing:  # completions get the CPU first
                await asyncio.sleep(0.05)
            if self._closing:
                return False
            keys, texts = zip(*pending[start:start + batch])
            try:
                vectors = await self.spawn(lambda: encoder.encode(list(texts)), self.embed_executor, "embedding")
            except ModelUnavailable as error:
                self.report_model_error(error)
                return False
            if self.engine.encoder() is not encoder:  # the retriever changed: its own vectors from now on
                return True
            self.index.add_embeddings(list(keys), vectors)
            if progress:
                done = min(start + batch, len(pending))
                self.work_done_progress.report(token, types.WorkDoneProgressReport(
                    message=f"{done}/{len(pending)} snippets", percentage=int(100 * done / len(pending))))
        if progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"{len(pending)} snippets embedded"))
        return True

    def watch_workspace(self, loop: asyncio.AbstractEventLoop) -> None:
        """Apply file creations, edits, deletions and moves on disk to the index (starting
        the observer walks the tree, so this runs on the index thread)."""
        if self._closing or self.watcher is not None:
            return
        self.watcher = WorkspaceWatcher(
            self.roots, lambda paths: loop.call_soon_threadsafe(self._apply_disk_changes, paths))
        self.watcher.start()

    def _apply_disk_changes(self, paths: set[Path]) -> None:
        loop = asyncio.get_running_loop()

        def apply() -> None:
            changed = self.index.apply_changes(paths, skip_path=self.is_open, stop=self._stop)
            if changed:
                logger.info("applied changes of %d paths on disk (%d files)", len(paths), changed)
                loop.call_soon_threadsafe(self.schedule_save)

        done = self.spawn(apply, self.index_executor, "applying file changes")
        done.add_done_callback(lambda _: self.schedule_embedding())

    def schedule_save(self, delay: float = 10.0) -> None:
        """Persist the index once changes have settled (a stale cache is only slower to
        reload, never wrong: every file is checked on restart)."""
        if self._save_timer is not None:
            self._save_timer.cancel()
        self._save_timer = asyncio.get_running_loop().call_later(delay, self._save_now)

    def _save_now(self) -> None:
        self._save_timer = None
        self.spawn(self.index.save, self.index_executor, "saving the index")

    def is_open(self, path: Path) -> bool:
        """Open buffers override the disk."""
        return any(Path(to_fs_path(uri) or "").resolve() == path for uri in list(self.workspace.text_documents))

    async def _begin_progress(self, token: str, title: str) -> bool:
        capabilities = self.client_capabilities
        if not (capabilities.window and capabilities.window.work_done_progress):
            return False
        try:
            await self.work_done_progress.create_async(token)
        except Exception:  # the client refused; progress is optional
            logger.info("client declined progress token %s", token)
            return False
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0))
        return True

    def load_model(self) -> None:
        """Load the generator ahead of the first request (on the model thread)."""
        try:
            self.engine.generator()
        except ModelUnavailable as error:
            self.report_model_error(error)

    def report_model_error(self, error: ModelUnavailable) -> None:
        """One clear message per distinct problem: log + window/showMessage."""
        message = f"aligncoder-lsp: {error}"
        if message == self.model_error:
            return
        self.model_error = message
        logger.error("%s", message)
        self.window_show_message(types.ShowMessageParams(types.MessageType.Error, message))

    def schedule_reindex(self, uri: str, delay: float = 0.3) -> None:
        """Re-index an open document shortly after its last change (trailing debounce)."""
        if (timer := self._reindex_timers.pop(uri, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._reindex_timers[uri] = loop.call_later(delay, self._reindex_now, uri)

    def _reindex_now(self, uri: str) -> None:
        self._reindex_timers.pop(uri, None)
        path = self.indexable(uri)
        document = self.workspace.text_documents.get(uri)
        if path is not None and document is not None:
            text = document.source
            done = self.spawn(lambda: self.index.set_file(str(path), text), self.index_executor, "re-indexing")
            done.add_done_callback(lambda _: self.schedule_embedding())

    def indexable(self, uri: str) -> Path | None:
        """The resolved path of ``uri`` if it is a source file inside a workspace root."""
        path = to_fs_path(uri)
        if path is None or language_of(path) is None:
            return None
        resolved = Path(path).resolve()
        return resolved if any(resolved.is_relative_to(root.resolve()) for root in self.roots) else None

    # -- completion ------------------------------------------------------------------

    def snapshot(self, uri: str, position: types.Position) -> CompletionRequest:
        """The request's document text and cursor, frozen now (later edits do not leak in)."""
        path = to_fs_path(uri)
        document = self.workspace.text_documents.get(uri)
        if document is not None:
            text = document.source
        elif path is not None and Path(path).is_file():
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise JsonRpcInvalidParams(f"cannot read {uri}: {error}") from error
        else:
            raise JsonRpcInvalidParams(f"unknown document {uri}")
        if position.line < 0 or position.character < 0:
            raise JsonRpcInvalidParams("position must not be negative")
        text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        line = min(position.line, len(lines) - 1)
        column = to_code_points(lines[line], position.character, self.workspace.position_encoding)
        if position.line >= len(lines):
            column = len(lines[line])
        resolved = str(Path(path).resolve()) if path else uri
        return CompletionRequest(resolved, text, line, column, language_of(resolved) or "python")

    async def complete(self, request: CompletionRequest) -> Completion | None:
        """Run the pipeline on the model thread; cancelling the awaiting task stops it
        within one generation step."""
        cancel = threading.Event()
        self._cancels.add(cancel)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.model_executor, self.engine.complete, request, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        except ModelUnavailable as error:
            self.report_model_error(error)
            return None
        finally:
            self._cancels.discard(cancel)

    def cancel_all(self) -> None:
        """Stop running generations and pending re-index timers."""
        for cancel in list(self._cancels):
            cancel.set()
        for timer in self._reindex_timers.values():
            timer.cancel()
        self._reindex_timers.clear()

    def stop_background(self) -> None:
        """Cancel background work while the event loop still runs (on ``shutdown``)."""
        self._closing = True
        self._stop.set()
        self.cancel_all()
        for future in list(self._tasks):
            future.cancel()
        if self._save_timer is not None:
            self._save_timer.cancel()

    def close(self) -> None:
        """Release threads and persist pending index changes (after the event loop ended)."""
        self._closing = True
        self._stop.set()
        self.cancel_all()
        if self.watcher is not None:
            self.watcher.stop()
        for executor in (self.model_executor, self.index_executor, self.embed_executor):
            executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close_encoder()
        if self._save_timer is not None:  # changes not yet persisted
            self.index.save()

    # -- error reporting -------------------------------------------------------------

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Internal errors are logged, not shown to the user; unparsable JSON is answered
        with ParseError."""
        if isinstance(error, json.JSONDecodeError):
            self.protocol._send_response(None, error=JsonRpcParseError(str(error)).to_response_error())
        logger.error("internal error (%s): %s", getattr(source, "__name__", source), error)
