"""The language server object: typed state, the model thread, request snapshots, errors.

Index work (build, watch, re-index, embed, persist) lives in :class:`IndexFeature`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from aligncoder_lsp import __version__
from aligncoder_lsp.config import APPLIES, Applies, Settings, changed_keys, merge
from aligncoder_lsp.index.embeddings import EncoderProcess
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.backend import LocalBackend
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest, Trace
from aligncoder_lsp.server.completion import CompletionFeature
from aligncoder_lsp.server.indexing import IndexFeature
from aligncoder_lsp.server.positions import to_code_points
from aligncoder_lsp.server.protocol import AlignProtocol
from aligncoder_lsp.workspace.files import Skip, language_of, read_source

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AlignCoderServer(LanguageServer):
    def __init__(self, settings: Settings | None = None):
        super().__init__("aligncoder-lsp", __version__, protocol_cls=AlignProtocol, max_workers=4)
        self.settings = settings or Settings()
        self.indexing = IndexFeature(self)
        # One retriever for background embedding and fine retrieval: a worker process
        self.engine = CompletionEngine(self.settings, self.indexing.index, lambda *args: EncoderProcess(
            *args, threads=self.settings.retriever.threads), keep_context=True)
        self.model_executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.completion = CompletionFeature(self)
        self.model_error: str | None = None
        self.last_trace: dict | None = None
        self.settings_warnings: set[str] = set()
        """Warnings already given about client settings (each is given once)."""
        self._tasks: set[asyncio.Future] = set()

    @property
    def index(self) -> WorkspaceIndex:
        return self.indexing.index

    # -- settings --------------------------------------------------------------------

    def apply_settings(self, data: Any) -> None:
        """Merge client settings (camelCase), warn once about what was refused and apply
        what changed."""
        if data is None:
            return
        if isinstance(data, dict) and isinstance(data.get("aligncoder"), dict):
            data = data["aligncoder"]
        before = copy.deepcopy(self.settings)
        for warning in merge(self.settings, data, trusted=False, seen=self.settings_warnings):
            logger.warning("%s", warning)
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning, warning))
        changed = changed_keys(before, self.settings)
        applies = {APPLIES[key] for key in changed}
        if Applies.MODEL in applies:
            self.model_error = None
            self.model_executor.submit(self.engine.unload)
        if Applies.RETRIEVER in applies:  # after the batch at hand, so that it does not fail
            self.spawn(self.engine.close_encoder, self.indexing.embed_executor, "restarting the retriever")
        if applies & {Applies.RETRIEVER, Applies.INDEX}:
            self.indexing.settings_changed(applies)

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

    async def begin_progress(self, token: str, title: str) -> bool:
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
        """Load the generator ahead of the first request (on the model thread), with the
        token texts that token healing reads when the model runs in this process."""
        try:
            backend = self.engine.generator()
            if isinstance(backend, LocalBackend):
                backend.model.token_texts()
        except ModelUnavailable as error:
            self.report_model_error(error)

    def report_model_error(self, error: ModelUnavailable) -> None:
        """One clear message per distinct problem: log + window/showMessage."""
        self._report_once(f"aligncoder-lsp: {error}", types.MessageType.Error)

    def report_backend(self, trace: Trace) -> None:
        """After a completion: a fallback to the in-process model is reported like a model error
        (once); an answer from the configured backend ends the problem it had."""
        if trace.fallback:
            self._report_once(f"aligncoder-lsp: {trace.fallback}; completing with the in-process model meanwhile",
                              types.MessageType.Warning)
        elif self.model_error is not None and "inference engine" in self.model_error:
            logger.info("%s answers again", trace.backend)
            self.model_error = None

    def _report_once(self, message: str, kind: types.MessageType) -> None:
        if message == self.model_error:
            return
        self.model_error = message
        logger.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        self.window_show_message(types.ShowMessageParams(kind, message))

    # -- completion ------------------------------------------------------------------

    def open_document(self, uri: str) -> TextDocument | None:
        """The open buffer of ``uri`` (pygls keys buffers by the percent-decoded URI)."""
        documents = self.workspace.text_documents
        return documents.get(unquote(uri)) or documents.get(uri)

    def snapshot(self, uri: str, position: types.Position) -> CompletionRequest:
        """The request's document text and cursor, frozen now (later edits do not leak in).

        Open buffers are completed as they are; an unopened file only when it is a source
        file inside a workspace folder, read through the guarded reader."""
        if position.line < 0 or position.character < 0:
            raise JsonRpcInvalidParams("position must not be negative")
        root, path = self.indexing.locate(uri)
        document = self.open_document(uri)
        if document is not None:
            text = document.source
        elif root is None or language_of(path) is None:
            raise JsonRpcInvalidParams(f"unknown document {uri}: not open and not a source file of the workspace")
        else:
            source = read_source(path, self.settings.index.max_file_bytes)
            if isinstance(source, Skip):
                raise JsonRpcInvalidParams(f"cannot read {uri}: {source.value}")
            text = source.text
        text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        line = min(position.line, len(lines) - 1)
        column = to_code_points(lines[line], position.character, self.workspace.position_encoding)
        if position.line >= len(lines):
            column = len(lines[line])
        return CompletionRequest(str(path), text, line, column, language_of(path) or "python")

    def completions_running(self) -> bool:
        return self.completion.running()

    def stop_background(self) -> None:
        """Cancel background work while the event loop still runs (on ``shutdown``)."""
        self.completion.cancel_all()
        self.indexing.shutdown()
        for future in list(self._tasks):
            future.cancel()

    def close(self) -> None:
        """Release threads and persist pending index changes (after the event loop ended)."""
        self.completion.cancel_all()
        self.indexing.close()
        self.model_executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close_encoder()

    # -- error reporting -------------------------------------------------------------

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Internal errors are logged, not shown to the user; a client's invalid request
        is only a warning."""
        level = logging.WARNING if isinstance(error, JsonRpcException) else logging.ERROR
        logger.log(level, "%s (%s): %s", "request error" if level == logging.WARNING else "internal error",
                   getattr(source, "__name__", source), error)
