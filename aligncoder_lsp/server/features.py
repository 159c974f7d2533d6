"""LSP feature handlers: thin async wrappers over the server's state and the pipeline.

Every handler runs on the event loop and never blocks it: model and index work go to the
server's own executors. Exceptions are logged (pygls answers requests with InternalError);
nothing pops up at the user except model problems, once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import to_fs_path

from aligncoder_lsp.config import Settings
from aligncoder_lsp.pipeline import Completion, CompletionRequest
from aligncoder_lsp.server.positions import to_client_units
from aligncoder_lsp.server.server import AlignCoderServer

logger = logging.getLogger(__name__)

TRACE_COMMAND = "aligncoder.lastTrace"
STATUS_COMMAND = "aligncoder.indexStatus"
SEARCH_COMMAND = "aligncoder.search"
_WORD_BEFORE = re.compile(r"[A-Za-z0-9_]*$")
TRIGGER_CHARACTERS = [".", "(", ","]
"""Where code usually goes on; not the space, which would ask for a completion at every word."""


def build_server(settings: Settings | None = None) -> AlignCoderServer:
    server = AlignCoderServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: AlignCoderServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)
        folders = [to_fs_path(f.uri) for f in params.workspace_folders or []]
        if not folders and (root := params.root_uri or params.root_path):
            folders = [to_fs_path(root) if "://" in root else root]
        roots = [Path(folder).resolve() for folder in folders if folder and Path(folder).is_dir()]
        ls.indexing.initialize(roots)
        logger.info("workspace roots: %s", [str(root) for root in roots] or "none")

    @server.feature(types.INITIALIZED)
    def initialized(ls: AlignCoderServer, params: types.InitializedParams) -> None:
        ls.spawn(ls.load_model, ls.model_executor, "model loading")
        if ls.settings.retrieval.enabled:
            ls.track(asyncio.get_running_loop().create_task(ls.indexing.build()), "indexing")

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: AlignCoderServer, params: None) -> None:
        ls.stop_background()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: AlignCoderServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_open_or_save(ls: AlignCoderServer, params) -> None:
        ls.indexing.document_changed(params.text_document.uri, delay=0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AlignCoderServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.indexing.document_changed(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AlignCoderServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.indexing.document_closed(params.text_document.uri)

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS, resolve_provider=False),
    )
    async def completion(ls: AlignCoderServer, params: types.CompletionParams) -> types.CompletionList:
        request = ls.snapshot(params.text_document.uri, params.position)
        result = await ls.completion.answer(request)
        if result is None or not result.text.strip():
            return types.CompletionList(is_incomplete=False, items=[])
        ls.last_trace = result.trace.to_json()
        item = completion_item(request, params.position, result, ls.workspace.position_encoding)
        return types.CompletionList(is_incomplete=False, items=[item] if item else [])

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: AlignCoderServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        request = ls.snapshot(params.text_document.uri, params.position)
        result = await ls.completion.answer(request)
        if result is None or not result.text.strip():
            return types.InlineCompletionList(items=[])
        ls.last_trace = result.trace.to_json()
        position = params.position
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=result.text,
            range=types.Range(position, position),
        )])

    @server.command(STATUS_COMMAND)
    def index_status(ls: AlignCoderServer, *args) -> dict:
        """Files, snippets and embedded snippets in the index (lock-free counters)."""
        return {"roots": [str(root) for root in ls.indexing.roots], "files": ls.index.file_count,
                "snippets": ls.index.snippet_count, "embedded": ls.index.embedded_count}

    @server.command(SEARCH_COMMAND)
    async def search(ls: AlignCoderServer, *args) -> list[dict]:
        """What BM25 retrieval finds for ``query``: path, 1-based lines, score (arguments
        ``[query, k]``; searched off the event loop)."""
        if len(args) != 2 or not isinstance(args[0], str) or type(args[1]) is not int or not 1 <= args[1] <= 100:
            raise JsonRpcInvalidParams(f"{SEARCH_COMMAND} takes [query: string, k: integer 1..100]")
        query, k = args
        found = await asyncio.to_thread(ls.index.search, query, k)
        return [{"path": ls.index.relative(snippet.path), "lines": [snippet.start + 1, snippet.end],
                 "score": round(score, 3)} for snippet, score in found]

    @server.command(TRACE_COMMAND)
    def last_trace(ls: AlignCoderServer, *args) -> dict | None:
        """The trace of the latest completion: mode, snippets, timings."""
        return ls.last_trace

    return server


def completion_item(request: CompletionRequest, position: types.Position, result: Completion,
                    encoding: str = "utf-16") -> types.CompletionItem | None:
    """The popup item for ``result``: it replaces the identifier being typed (so client-side
    filtering keeps it while the user types on) and inserts the suggestion's first line only.

    Some clients insert popup text as typed keys (Neovim 0.7's omnifunc puts a NUL
    where a line break was, whether it comes as ``textEdit`` or ``insertText``), so a
    multi-line item is not applied alike everywhere. The whole suggestion stays in the item's
    documentation and in the inline completion, and as the user types on along it, its rest
    is answered from memory. None when the suggestion begins on a line of its own (nothing to
    insert on the cursor's line).
    """
    line_text = request.text.split("\n")[request.line]
    word = _WORD_BEFORE.search(line_text[: request.column]).group(0)
    first_line, newline, _ = result.text.partition("\n")
    if not first_line.strip():
        return None
    new_text = word + first_line
    start = types.Position(position.line, to_client_units(line_text, request.column - len(word), encoding))
    label = new_text.strip()
    label = label if len(label) <= 60 else label[:57] + "..."
    return types.CompletionItem(
        label=label + (" …" if newline else ""),
        kind=types.CompletionItemKind.Text,
        detail="aligncoder",
        documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```{request.language}\n{word + result.text}\n```"),
        filter_text=new_text,
        sort_text="0",
        text_edit=types.TextEdit(types.Range(start, position), new_text),
        insert_text_mode=types.InsertTextMode.AsIs,  # the text carries its own indentation
        data=result.trace.to_json(),
    )
