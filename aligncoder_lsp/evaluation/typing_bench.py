"""``aligncoder-lsp bench typing``: the real server driven over stdio as an editor drives it
while a simulated programmer types.

Seeded spans of real files (see :mod:`typing_model`) are removed from the files on disk
before the server starts, so the index never holds them. Each span's file is then opened
with the span removed and the span is typed back at a human pace: one ``didChange`` per
keystroke and, once the editor has been idle for the debounce time, an inline-completion
request; the next keystroke cancels a request still pending (``$/cancelRequest``), as VS Code
does. A suggestion that arrives before the next keystroke is shown; when it matches what
comes next the user accepts it with Tab (the whole of it, or its first line), inserted with
one ``didChange``. The code after the cursor stays in the buffer, as in an editor.

Per retrieval mode it reports: latency of shown suggestions, the share of requests answered
before the next keystroke (overall and at line starts), accepted / typed characters and
keystrokes saved, suggestions that end inside an unclosed string or bracket, CPU seconds of
the server's process tree per minute of typing and the peak memory of the server and its
workers. Real time and the real model: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from aligncoder_lsp.config import MODES, Settings
from aligncoder_lsp.evaluation import process_stats
from aligncoder_lsp.balance import unclosed
from aligncoder_lsp.evaluation.server_bench import percentile
from aligncoder_lsp.evaluation.tasks import materialize
from aligncoder_lsp.evaluation.typing_model import Pace, Span, accepted_text, keystrokes, next_keystroke, sample_spans
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.server.positions import to_client_units, to_code_points

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 1800
"""Longest wait for the workspace to be indexed and embedded before typing starts."""
SETTLE_STALL_S = 180
"""Longest wait while indexing and embedding make no visible progress."""
REQUEST_TIMEOUT_S = 300
SERVER_EXIT_TIMEOUT_S = 30


@dataclass
class Request:
    """One inline-completion request and what became of it."""

    sent: float
    line_start: bool
    text: str
    cursor: int
    language: str
    encoding: str
    answered: float | None = None
    insertion: str | None = None
    error: str | None = None
    in_time: bool = False
    cancelled: bool = False
    accepted: int = 0

    @property
    def latency_ms(self) -> float | None:
        return None if self.answered is None else (self.answered - self.sent) * 1000

    @property
    def shown(self) -> bool:
        return self.in_time and bool(self.insertion and self.insertion.strip())

    def take(self, answer, done: asyncio.Event) -> None:
        """Record the answer of the request's future (called when it resolves)."""
        self.answered = time.monotonic()
        try:
            result = answer.result()
        except Exception as error:  # RequestCancelled and server errors alike: recorded, not raised
            self.error = type(error).__name__
        else:
            items = result.items if isinstance(result, types.InlineCompletionList) else result or []
            self.insertion = insertion(items[0], self.text, self.cursor, self.encoding) if items else ""
        done.set()


@dataclass
class Run:
    """One server process typing the spans of one repository in one mode."""

    repository: str
    mode: str
    spans: int = 0
    requests: list[Request] = field(default_factory=list)
    characters: int = 0
    accepted_characters: int = 0
    keystrokes_needed: int = 0
    keystrokes_pressed: int = 0
    typing_seconds: float = 0.0
    cpu_seconds: float | None = None
    server_peak_rss_mib: float | None = None
    worker_peak_rss_mib: list[float] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    failure: str | None = None


class Buffer:
    """The editor's copy of a document and its cursor (offsets in code points)."""

    def __init__(self, text: str, cursor: int, encoding: str):
        self.text, self.cursor, self.encoding, self.version = text, cursor, encoding, 1

    @property
    def line_before(self) -> str:
        return self.text[self.text.rfind("\n", 0, self.cursor) + 1: self.cursor]

    def position(self) -> types.Position:
        before = self.line_before
        return types.Position(self.text.count("\n", 0, self.cursor), to_client_units(before, len(before), self.encoding))

    def insert(self, text: str) -> types.Position:
        """Insert ``text`` at the cursor and move past it; the position it went in at."""
        position = self.position()
        self.text = self.text[: self.cursor] + text + self.text[self.cursor:]
        self.cursor += len(text)
        self.version += 1
        return position


def insertion(item: types.InlineCompletionItem, text: str, cursor: int, encoding: str) -> str | None:
    """The text an inline item adds at ``cursor``, or None when it would also change text
    after the cursor or replace text before it that it does not repeat."""
    inserted = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
    if item.range is None:
        return inserted
    lines = text.split("\n")

    def offset(position: types.Position) -> int:
        if position.line >= len(lines):
            return len(text)
        column = to_code_points(lines[position.line], position.character, encoding)
        return sum(len(line) + 1 for line in lines[: position.line]) + column

    start, end = offset(item.range.start), offset(item.range.end)
    replaced = text[start:cursor]
    if end != cursor or start > cursor or not inserted.startswith(replaced):
        return None
    return inserted[len(replaced):]


class TypingClient(LanguageClient):
    """An editor's side of the protocol: notifications are recorded, never answered with errors."""

    def __init__(self):
        super().__init__("aligncoder-typing-bench", "1")
        self.messages: list[str] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._ids = itertools.count(1)

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        @self.feature(types.WINDOW_LOG_MESSAGE)
        def message(client: TypingClient, params) -> None:
            if params.type in (types.MessageType.Error, types.MessageType.Warning):
                client.messages.append(params.message)

        @self.feature(types.PROGRESS)
        @self.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def ignored(client: TypingClient, params) -> None:
            """Neither changes what is measured."""

    @property
    def server_pid(self) -> int:
        return self._server.pid

    async def start(self, command: list[str]) -> None:
        await self.start_io(*command)
        self._async_tasks.append(asyncio.create_task(self._drain_stderr()))

    async def close(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the server to exit, then kill it."""
        if self._server is None:
            return
        try:
            await asyncio.wait_for(self._server.wait(), grace)
        except asyncio.TimeoutError:
            if grace:
                logger.warning("the server did not exit within %.0f s; killing it", grace)
            self._server.kill()
        await self.stop()

    async def _drain_stderr(self) -> None:
        """Keep the server's stderr flowing (a full pipe would block its logging)."""
        while line := await self._server.stderr.readline():
            self.stderr_tail.append(line.decode("utf-8", errors="replace").rstrip())

    def inline_request(self, uri: str, buffer: Buffer, language: str) -> tuple[Request, asyncio.Event, str]:
        request = Request(time.monotonic(), not buffer.line_before.strip(), buffer.text, buffer.cursor,
                          language, buffer.encoding)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        msg_id = f"typing-{next(self._ids)}"
        future = self.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri), position=buffer.position()), msg_id=msg_id)
        future.add_done_callback(lambda answer: loop.call_soon_threadsafe(request.take, answer, done))
        return request, done, msg_id

    def cancel(self, msg_id: str) -> None:
        self.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))


class Typist:
    """Types spans into one server, timing everything in real time."""

    def __init__(self, client: TypingClient, run: Run, pace: Pace, seed: int, encoding: str, incremental: bool):
        self.client, self.run, self.pace, self.seed = client, run, pace, seed
        self.encoding, self.incremental = encoding, incremental

    async def type_span(self, root: Path, span: Span) -> None:
        rng = random.Random(f"{self.seed}:{span.relative}:{span.start}")
        uri = (root / span.relative).as_uri()
        buffer = Buffer(span.prefix + span.suffix, len(span.prefix), self.encoding)
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id=span.language, version=buffer.version, text=buffer.text)))
        self.run.spans += 1
        self.run.characters += len(span.target)
        self.run.keystrokes_needed += len(keystrokes(buffer.line_before, span.target))
        typed = 0
        started = last_key = time.monotonic()
        while typed < len(span.target):
            rest = span.target[typed:]
            due = last_key + self.pace.pause(buffer.line_before, rest, rng)
            accepted = ""
            if due - last_key > self.pace.debounce:
                await _sleep_until(last_key + self.pace.debounce)
                accepted = await self._suggest(uri, buffer, span.language, rest, due)
            await _sleep_until(due)
            last_key = time.monotonic()
            key = accepted or next_keystroke(buffer.line_before, rest)
            self._change(uri, buffer, key)
            typed += len(key)
            self.run.keystrokes_pressed += 1
            self.run.accepted_characters += len(accepted)
        self.run.typing_seconds += time.monotonic() - started
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))

    async def _suggest(self, uri: str, buffer: Buffer, language: str, rest: str, due: float) -> str:
        """Ask for an inline completion; what the user accepts of it at ``due`` (the next keystroke)."""
        request, done, msg_id = self.client.inline_request(uri, buffer, language)
        self.run.requests.append(request)
        try:
            await asyncio.wait_for(done.wait(), max(0.0, due - time.monotonic()))
        except asyncio.TimeoutError:
            self.client.cancel(msg_id)
            request.cancelled = True
            return ""
        request.in_time = True
        if request.shown:
            request.accepted = len(accepted_text(request.insertion, rest))
        return rest[: request.accepted]

    def _change(self, uri: str, buffer: Buffer, text: str) -> None:
        position = buffer.insert(text)
        change = (types.TextDocumentContentChangePartial(range=types.Range(position, position), text=text)
                  if self.incremental else types.TextDocumentContentChangeWholeDocument(text=buffer.text))
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=buffer.version), [change]))


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def type_with_server(root: Path, spans: list[Span], mode: str, command: list[str], pace: Pace,
                           seed: int) -> Run:
    """Start a server on ``root`` in ``mode``, wait until it has indexed and embedded the
    workspace, warm the model up, then type every span."""
    run = Run(root.name, mode)
    client = TypingClient()
    grace = 0.0
    try:
        await client.start(command)
        result = await asyncio.wait_for(client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(
                general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16]),
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities())),
            process_id=None, root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(root.as_uri(), root.name)],
            initialization_options={"retrieval": {"mode": mode}})), REQUEST_TIMEOUT_S)
        client.initialized(types.InitializedParams())
        encoding, incremental = negotiated(result.capabilities)
        await settle(client)
        await _warm_up(client, root, spans[0])
        typist = Typist(client, run, pace, seed, encoding, incremental)
        cpu_before = process_stats.cpu_seconds(client.server_pid)
        for span in spans:
            await typist.type_span(root, span)
        cpu_after = process_stats.cpu_seconds(client.server_pid)
        if cpu_before is not None and cpu_after is not None:
            run.cpu_seconds = cpu_after - cpu_before
        run.server_peak_rss_mib = process_stats.peak_rss_mib(client.server_pid)
        run.worker_peak_rss_mib = [rss for pid in process_stats.descendants(client.server_pid)
                                   if (rss := process_stats.peak_rss_mib(pid)) is not None]
        await asyncio.wait_for(client.shutdown_async(None), SERVER_EXIT_TIMEOUT_S)
        client.exit(None)
        grace = SERVER_EXIT_TIMEOUT_S
    except Exception as error:  # a dead or stuck server ends this run, not the benchmark
        run.failure = f"{type(error).__name__}: {error}"
        logger.error("%s, mode %s: %s; server stderr ends:\n%s", root.name, mode, run.failure,
                     "\n".join(client.stderr_tail))
    finally:
        await client.close(grace)
    run.messages = client.messages
    return run


def negotiated(capabilities: types.ServerCapabilities) -> tuple[str, bool]:
    """The position encoding the server chose and whether it takes incremental changes."""
    encoding = capabilities.position_encoding or types.PositionEncodingKind.Utf16
    if isinstance(encoding, types.PositionEncodingKind):  # str() of the enum is its name, not its value
        encoding = encoding.value
    sync = capabilities.text_document_sync
    kind = sync.change if isinstance(sync, types.TextDocumentSyncOptions) else sync
    return encoding, kind == types.TextDocumentSyncKind.Incremental


async def settle(client: LanguageClient, timeout: float = SETTLE_TIMEOUT_S, poll: float = 0.5,
                 stall: float = SETTLE_STALL_S) -> bool:
    """Wait until every snippet of the workspace is indexed and embedded (background work
    would otherwise be measured as typing cost); False after ``timeout``, or once the
    figures have not moved for ``stall`` seconds (an encoder that cannot load, say)."""
    started = changed = time.monotonic()
    last = None
    while (now := time.monotonic()) - started < timeout and now - changed < stall:
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams("aligncoder.indexStatus"))
        if status and status["snippets"] and status["embedded"] >= status["snippets"]:
            return True
        if status != last:
            last, changed = status, now
        await asyncio.sleep(poll)
    logger.warning("the workspace was not indexed and embedded after %.0f s (last seen: %s); typing anyway",
                   time.monotonic() - started, last)
    return False


async def _warm_up(client: TypingClient, root: Path, span: Span) -> None:
    """One untimed completion at the top of a file, so model loading is not measured."""
    uri = (root / span.relative).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id=span.language, version=1, text=span.prefix + span.suffix)))
    await asyncio.wait_for(client.text_document_inline_completion_async(types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(0, 0))), REQUEST_TIMEOUT_S)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))


def repositories(paths: list[Path]) -> list[Path]:
    """Each path is a repository (a folder or a REPO.tar.gz); a folder holding .tar.gz
    archives stands for those archives."""
    found = []
    for path in paths:
        archives = sorted(path.glob("*.tar.gz")) if path.is_dir() else []
        found += archives or [path]
    missing = [str(path) for path in found if not (path.is_dir() or path.name.endswith(".tar.gz") and path.is_file())]
    if missing:
        raise ValueError(f"not a folder or .tar.gz archive: {', '.join(missing)}")
    return found


def _copy(repository: Path, workdir: Path) -> Path:
    name = repository.name.removesuffix(".tar.gz")
    return materialize(repository.parent, name, workdir)


async def benchmark(repos: list[Path], modes: list[str], count: int, seed: int, max_lines: int, pace: Pace,
                    command: list[str], cache_dir: Path) -> list[Run]:
    """Type ``count`` spans spread over ``repos`` once per mode; one run per repository and mode."""
    rng = random.Random(seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="aligncoder-typing-") as workdir:
        for number, repository in enumerate(repos):
            share = count // len(repos) + (number < count % len(repos))
            if not share:
                continue
            root = _copy(repository, Path(workdir)).resolve()
            spans = sample_spans(root, share, rng, max_lines)
            if not spans:
                logger.warning("%s: no span to type (no Python or Java file with one)", repository)
                continue
            for span in spans:  # gone from disk before any server starts: never indexed
                (root / span.relative).write_text(span.prefix + span.suffix, encoding="utf-8")
            for mode in modes:
                index_cache = WorkspaceIndex.cache_file_for(cache_dir, [root]).parent
                try:
                    runs.append(await type_with_server(root, spans, mode, command, pace, seed))
                finally:  # the cache saw typed buffers: no later run may start from it
                    shutil.rmtree(index_cache, ignore_errors=True)
            shutil.rmtree(root)
    return runs


def summarize(mode: str, runs: list[Run]) -> dict:
    """The figures of one mode over all its runs."""
    requests = [request for run in runs for request in run.requests]
    line_starts = [request for request in requests if request.line_start]
    typed = sum(run.characters - run.accepted_characters for run in runs)
    accepted = sum(run.accepted_characters for run in runs)
    needed = sum(run.keystrokes_needed for run in runs)
    pressed = sum(run.keystrokes_pressed for run in runs)
    minutes = sum(run.typing_seconds for run in runs) / 60
    cpu = [run.cpu_seconds for run in runs if run.cpu_seconds is not None]
    return {
        "mode": mode,
        "repositories": sorted({run.repository for run in runs}),
        "spans": sum(run.spans for run in runs),
        "failed_runs": [f"{run.repository}: {run.failure}" for run in runs if run.failure],
        "typing_minutes": round(minutes, 2),
        "requests": _shares(requests),
        "line_start_requests": _shares(line_starts),
        "latency_ms": {"shown": _percentiles([r.latency_ms for r in requests if r.shown]),
                       "answered_in_time": _percentiles([r.latency_ms for r in requests if r.in_time])},
        "characters": {"total": typed + accepted, "typed": typed, "accepted": accepted,
                       "accepted_per_typed": _ratio(accepted, typed)},
        "keystrokes": {"needed": needed, "pressed": pressed, "saved_share": _ratio(needed - pressed, needed)},
        "unclosed_suggestions": _unclosed_suggestions(requests),
        "cpu_seconds_per_typing_minute": round(sum(cpu) / minutes, 2) if cpu and minutes else None,
        "peak_rss_mib": {
            "server": _rounded_max(run.server_peak_rss_mib for run in runs),
            "workers": _rounded_max(rss for run in runs for rss in run.worker_peak_rss_mib),
            "worker_processes": max((len(run.worker_peak_rss_mib) for run in runs), default=0),
        },
        "server_messages": sorted({message for run in runs for message in run.messages})[:10],
    }


def _unclosed_suggestions(requests: list[Request]) -> dict:
    """Suggestions (shown or not) that end inside a string, comment or bracket their suffix
    leaves open; ``opened_by_suggestion``: those where the suggestion itself opened it."""
    checked = broken = opened_by_suggestion = 0
    examples = []
    for request in requests:
        if not (request.insertion and request.insertion.strip()):
            continue
        prefix, suffix = request.text[: request.cursor], request.text[request.cursor:]
        left_open = unclosed(prefix, request.insertion, suffix, request.language)
        if left_open is None:
            continue
        checked += 1
        if left_open:
            broken += 1
            opened_by_suggestion += any(opening.offset >= request.cursor for opening in left_open)
            if len(examples) < 5:
                examples.append({"line_before": prefix.rpartition("\n")[2], "suggestion": request.insertion,
                                 "open": [opening.kind for opening in left_open]})
    return {"checked": checked, "broken": broken, "opened_by_suggestion": opened_by_suggestion, "examples": examples}


def _shares(requests: list[Request]) -> dict:
    in_time = sum(request.in_time for request in requests)
    return {"sent": len(requests), "answered_in_time": in_time, "answered_in_time_share": _ratio(in_time, len(requests)),
            "shown": sum(request.shown for request in requests),
            "accepted": sum(bool(request.accepted) for request in requests),
            "cancelled": sum(request.cancelled for request in requests),
            "errors": sum(request.error is not None and request.error != "JsonRpcRequestCancelled"
                          for request in requests)}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": round(statistics.median(values)), "p90": round(percentile(values, 0.9)),
            "p99": round(percentile(values, 0.99))}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _rounded_max(values) -> int | None:
    present = [value for value in values if value is not None]
    return round(max(present)) if present else None


def markdown(reports: list[dict]) -> str:
    header = ("| mode | spans | requests | answered before next key | at line starts | shown latency p50 / p90 / p99 ms "
              "| accepted / typed chars | keystrokes saved | unclosed suggestions | CPU s / typing min "
              "| peak RSS server / workers MiB |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for report in reports:
        latency = report["latency_ms"]["shown"]
        rss = report["peak_rss_mib"]
        rows.append("| " + " | ".join("–" if cell is None else str(cell) for cell in (
            report["mode"], report["spans"], report["requests"]["sent"],
            _percent(report["requests"]["answered_in_time_share"]),
            _percent(report["line_start_requests"]["answered_in_time_share"]),
            " / ".join(str(latency.get(q, "–")) for q in ("p50", "p90", "p99")),
            report["characters"]["accepted_per_typed"], _percent(report["keystrokes"]["saved_share"]),
            f"{report['unclosed_suggestions']['broken']} of {report['unclosed_suggestions']['checked']}",
            report["cpu_seconds_per_typing_minute"], f"{rss['server'] or '–'} / {rss['workers'] or '–'}",
        )) + " |")
    return "\n".join(rows) + "\n"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def server_command(args) -> list[str]:
    command = [sys.executable, "-m", "aligncoder_lsp", "serve"]
    for flag, value in (("--model", args.model), ("--engine", args.engine), ("--threads", args.threads),
                        ("--gpu-layers", args.gpu_layers), ("--cache-dir", args.cache_dir), ("--config", args.config)):
        if value is not None:
            command += [flag, str(value)]
    return command


def main(args, settings: Settings) -> int:
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    try:
        repos = repositories(args.repos)
        if unknown or not modes:
            raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODES)}")
        if args.spans < 1 or args.max_lines < 1 or args.debounce_ms < 0:
            raise ValueError("--spans and --max-lines must be at least 1, --debounce-ms not negative")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pace = Pace(debounce=args.debounce_ms / 1000)
    command = server_command(args)
    runs = asyncio.run(benchmark(repos, modes, args.spans, args.seed, args.max_lines, pace, command,
                                 settings.resolved_cache_dir()))
    reports = [summarize(mode, [run for run in runs if run.mode == mode]) for mode in modes]
    report = {"repositories": [str(path) for path in repos], "server": command[1:], "seed": args.seed,
              "spans_requested": args.spans, "max_lines": args.max_lines, "pace": asdict(pace),
              "modes": reports}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    table = markdown(reports)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table, end="")
    if not runs:
        logger.error("no span was typed: the repositories hold no Python or Java file with one")
    return 1 if not runs or any(run.failure for run in runs) else 0
