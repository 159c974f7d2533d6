"""The real server, the real embedded model, a real workspace: completions over LSP."""

import asyncio
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import FIXTURES

WORKSPACE = FIXTURES / "workspace"
MAIN = WORKSPACE / "app" / "main.py"
CURSOR = types.Position(line=13, character=4)  # the blank line at the end of demo()

pytestmark = pytest.mark.slow


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "aligncoder_lsp", "serve", "-v"]),
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=pytest_lsp.client_capabilities("visual-studio-code"),
        root_uri=WORKSPACE.as_uri(),
        workspace_folders=[types.WorkspaceFolder(WORKSPACE.as_uri(), "workspace")],
        initialization_options={"model": {"maxTokens": 48}},
    ))
    lsp_client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=MAIN.as_uri(), language_id="python", version=1, text=MAIN.read_text())))
    yield
    await lsp_client.shutdown_session()


async def _wait_for_index(client: LanguageClient) -> None:
    """Indexing reports progress; wait for its end so retrieval sees the whole workspace."""
    for _ in range(600):
        if any(isinstance(v, types.WorkDoneProgressEnd) for values in client.progress_reports.values() for v in values):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("indexing never finished")


async def test_completion_uses_repository_context(client: LanguageClient):
    await _wait_for_index(client)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(MAIN.as_uri()), position=CURSOR))
    assert isinstance(result, types.CompletionList)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.text_edit.new_text.strip()
    assert item.text_edit.range.end == CURSOR
    trace = item.data
    assert trace["mode"] == "bm25" and trace["retrieved"]
    used = {snippet["path"] for snippet in trace["snippets"]}
    assert used and "app/main.py" not in used
    assert used <= {"shop/models.py", "shop/pricing.py", "shop/__init__.py", "java/com/acme/Greeter.java"}
    assert trace["generated_tokens"] > 0
    assert trace["timings_ms"]["total"] > 0


async def test_inline_completion(client: LanguageClient):
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(MAIN.as_uri()), position=CURSOR))
    assert result is not None and len(result.items) == 1
    assert result.items[0].insert_text.strip()
    assert result.items[0].range == types.Range(CURSOR, CURSOR)


async def test_cancelled_request_answers_request_cancelled_and_server_goes_on(client: LanguageClient):
    params = types.CompletionParams(text_document=types.TextDocumentIdentifier(MAIN.as_uri()), position=CURSOR)
    pending = client.protocol.send_request(types.TEXT_DOCUMENT_COMPLETION, params, msg_id="to-cancel")
    await asyncio.sleep(0.3)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(asyncio.wrap_future(pending), 30)
    result = await client.text_document_completion_async(params)
    assert len(result.items) == 1


async def test_protocol_is_answered_while_the_model_generates(client: LanguageClient):
    params = types.CompletionParams(text_document=types.TextDocumentIdentifier(MAIN.as_uri()), position=CURSOR)
    generating = asyncio.ensure_future(client.text_document_completion_async(params))
    await asyncio.sleep(0.2)
    trace = await client.workspace_execute_command_async(types.ExecuteCommandParams("aligncoder.lastTrace"))
    assert not generating.done(), "the command was answered only after the completion"
    assert trace is None or isinstance(trace, dict)
    assert len((await generating).items) == 1
