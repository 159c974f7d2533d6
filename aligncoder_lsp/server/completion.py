"""The completion feature: one computation per document state and cursor, the latest request
of a document wins, and a suggestion the user types along with is answered from memory.

Editors ask for a completion and an inline completion at the same place, and many never
cancel what they asked before the last keystroke; the model thread must only ever work on
what the user sees now.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.pipeline import Cancelled, Completion, CompletionRequest

if TYPE_CHECKING:
    from aligncoder_lsp.server.server import AlignCoderServer

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(path, text before the cursor, text after it): what a completion depends on."""


@dataclass
class _Job:
    """One computation on the model thread and the requests waiting for it."""

    cancel: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future | None = None
    waiters: int = 0


@dataclass
class _Shown:
    """The latest suggestion of a document, to answer the user typing along with it."""

    prefix: str
    suffix: str
    completion: Completion


class CompletionFeature:
    def __init__(self, server: AlignCoderServer):
        self.server = server
        self._jobs: dict[Key, _Job] = {}
        self._latest: dict[str, Key] = {}
        self._shown: dict[str, _Shown] = {}

    def running(self) -> bool:
        return bool(self._jobs)

    async def answer(self, request: CompletionRequest) -> Completion | None:
        """The completion for ``request``; None when a newer request of the same document
        superseded it, or when the model is unavailable (reported to the user once)."""
        prefix, suffix = request.split()
        key = (request.path, prefix, suffix)
        previous = self._latest.get(request.path)
        if previous is not None and previous != key and (stale := self._jobs.get(previous)) is not None:
            stale.cancel.set()  # the document moved on: nobody will see that answer
        self._latest[request.path] = key
        if (typed_ahead := self._typed_ahead(request.path, prefix, suffix)) is not None:
            return typed_ahead
        job = self._jobs.get(key)
        if job is None or job.cancel.is_set():
            job = self._start(key, request)
        job.waiters += 1
        try:
            completion = await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if job.future.cancelled():
                return None  # superseded: an empty answer, also for clients that never cancel
            raise
        finally:
            job.waiters -= 1
            if job.waiters == 0 and not job.future.done():
                job.cancel.set()  # every request that wanted it was cancelled
        if completion is not None and self._latest.get(request.path) == key:
            self._shown[request.path] = _Shown(prefix, suffix, completion)
        return completion

    def _start(self, key: Key, request: CompletionRequest) -> _Job:
        job = self._jobs[key] = _Job()
        job.future = self.server.track(asyncio.ensure_future(self._run(key, job, request)), "completion")
        return job

    async def _run(self, key: Key, job: _Job, request: CompletionRequest) -> Completion | None:
        """Compute on the model thread; this task starts after the requests read with this
        one have been seen, so a burst of keystrokes computes only its newest."""
        engine = self.server.engine

        def compute() -> Completion:
            if job.cancel.is_set():  # superseded while it waited for the model thread
                raise Cancelled()
            logger.debug("completing %s at %d:%d", request.path, request.line + 1, request.column + 1)
            return engine.complete(request, job.cancel)

        try:
            if job.cancel.is_set():
                raise Cancelled()
            completion = await asyncio.get_running_loop().run_in_executor(self.server.model_executor, compute)
            self.server.report_backend(completion.trace)
            return completion
        except Cancelled:
            raise asyncio.CancelledError() from None
        except ModelUnavailable as error:
            self.server.report_model_error(error)
            return None
        finally:
            if self._jobs.get(key) is job:
                del self._jobs[key]

    def _typed_ahead(self, path: str, prefix: str, suffix: str) -> Completion | None:
        """The rest of the shown suggestion when the user has typed its beginning."""
        shown = self._shown.get(path)
        if shown is None or shown.suffix != suffix or not prefix.startswith(shown.prefix):
            return None
        typed = prefix[len(shown.prefix):]
        text = shown.completion.text
        if not typed or not text.startswith(typed) or not text[len(typed):].strip():
            return None
        trace = replace(shown.completion.trace, timings_ms={"total": 0.0}, typed_ahead=len(typed))
        return Completion(text[len(typed):], trace)

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()
