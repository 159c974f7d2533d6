"""Every retrieval mode through the engine, with the real embedded models."""

import threading

import pytest

from aligncoder_lsp.balance import unclosed
from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.llama_backend import Cancelled
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest
from tests.conftest import FIXTURES

WORKSPACE = FIXTURES / "workspace"
MAIN = WORKSPACE / "app" / "main.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    settings = Settings()
    settings.model.max_tokens = 24
    index = WorkspaceIndex(settings.index)
    index.build([WORKSPACE])
    return CompletionEngine(settings, index)


def _request() -> CompletionRequest:
    return CompletionRequest(str(MAIN), MAIN.read_text(), 13, 4)


def test_no_retrieval(engine):
    result = engine.complete(_request(), threading.Event(), "none")
    assert result.text.strip() and not result.trace.retrieved and result.trace.snippets == []


def test_bm25_puts_coarse_snippets_of_other_files(engine):
    trace = engine.complete(_request(), threading.Event(), "bm25").trace
    assert trace.retrieved and {s.source for s in trace.snippets} <= {"bm25", "dependency"}
    assert all(s.path != "app/main.py" for s in trace.snippets)


def test_aligncoder_drafts_and_reranks(engine):
    trace = engine.complete(_request(), threading.Event(), "aligncoder").trace
    assert len(trace.drafts) == engine.settings.retrieval.drafts
    assert trace.snippets and all(s.source.startswith("fine:") for s in trace.snippets)
    assert {"drafts", "fine", "draft_prompt_eval"} <= trace.timings_ms.keys()


def test_aligncoder_without_enhancement_has_no_drafts(engine):
    trace = engine.complete(_request(), threading.Event(), "aligncoder-no-enhance").trace
    assert trace.drafts == [] and trace.snippets


def test_cancelled_before_generation(engine):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.complete(_request(), cancel, "aligncoder")


def test_selective_follows_the_policy_and_its_threshold(engine):
    trace = engine.complete(_request(), threading.Event(), "selective").trace
    assert 0.0 <= trace.retrieve_probability <= 1.0
    assert trace.retrieved == (trace.retrieve_probability >= engine.policy().threshold)
    engine.settings.retrieval.threshold = 0.0
    assert engine.complete(_request(), threading.Event(), "selective").trace.retrieved
    engine.settings.retrieval.threshold = 1.0
    assert not engine.complete(_request(), threading.Event(), "selective").trace.retrieved
    engine.settings.retrieval.threshold = -1.0


def test_dependency_signatures_keep_to_their_budget(engine):
    request = _request()
    dependencies = engine.index.dependencies(request.path, request.text)
    assert dependencies
    model = engine.generator()
    ranked = [(s, 0.0, "dependency") for s in dependencies]
    context = engine.context_block(ranked, request.language, budget=90)
    assert context and model.count_tokens(context) <= 30 + 40  # the header and path lines
    for snippet in dependencies:  # what is shown is the head of a signature
        shown = [block for block in context.split("# --- ")[1:] if block.startswith(engine.index.relative(snippet.path))]
        for block in shown:
            body = "\n".join(line[2:] for line in block.strip().split("\n")[1:])
            assert snippet.text.startswith(body)


def _typed(text: str, line: int, column: int, typed: str) -> CompletionRequest:
    lines = text.split("\n")
    lines[line] = lines[line][:column] + typed + lines[line][column:]
    return CompletionRequest(str(MAIN), "\n".join(lines), line, column + len(typed))


@pytest.mark.parametrize("mode", ["bm25", "aligncoder"])
def test_typing_on_keeps_a_relevant_context_block_and_its_cache(engine, mode):
    kept = CompletionEngine(engine.settings, engine.index, keep_context=True)
    kept._generator = engine.generator()  # one model in memory
    text = MAIN.read_text()
    first = kept.complete(CompletionRequest(str(MAIN), text, 13, 4), threading.Event(), mode).trace
    second = kept.complete(_typed(text, 13, 4, "cart."), threading.Event(), mode).trace
    assert not first.kept_context and second.kept_context
    assert second.snippets == first.snippets and second.drafts == first.drafts
    assert "drafts" not in second.timings_ms and "fine" not in second.timings_ms
    assert second.reused_tokens >= first.prompt_tokens - 8  # only the typed end of the prompt is new
    again = engine.complete(_typed(text, 13, 4, "cart."), threading.Event(), mode).trace
    assert not again.kept_context  # an engine for independent requests never keeps a block
    kept.close_encoder()


def test_an_edit_of_a_shown_snippet_renews_the_block(tmp_path):
    import shutil

    shutil.copytree(WORKSPACE, tmp_path / "ws")
    main = tmp_path / "ws" / "app" / "main.py"
    settings = Settings()
    settings.model.max_tokens = 8
    index = WorkspaceIndex(settings.index)
    index.build([tmp_path / "ws"])
    kept = CompletionEngine(settings, index, keep_context=True)
    request = CompletionRequest(str(main), main.read_text(), 13, 4)
    first = kept.complete(request, threading.Event(), "bm25").trace
    shown = next(s for s in first.snippets if s.source == "bm25")
    path = tmp_path / "ws" / shown.path
    index.set_file(str(path), path.read_text().replace("def ", "def  "))
    second = kept.complete(request, threading.Event(), "bm25").trace
    assert not second.kept_context and second.snippets


@pytest.mark.parametrize("line", ["    ", "    cart.add_item(", '    raise ValueError('])
def test_a_suggestion_cut_at_the_token_limit_leaves_nothing_open(engine, monkeypatch, line):
    monkeypatch.setattr(engine.settings.model, "max_tokens", 6)
    text = MAIN.read_text().replace("\n    \n", f"\n{line}\n", 1)
    request = CompletionRequest(str(MAIN), text, 13, len(line))
    result = engine.complete(request, threading.Event(), "none")
    prefix, suffix = request.split()
    assert result.trace.stopped_by == "max_tokens"
    assert not [opening for opening in unclosed(prefix, result.text, suffix, "python")
                if opening.offset >= len(prefix)], result.text


def test_a_partial_identifier_is_extended(engine):
    text = MAIN.read_text().replace("\n    \n", "\n    cart.add_it\n", 1)
    result = engine.complete(CompletionRequest(str(MAIN), text, 13, len("    cart.add_it")), threading.Event(), "none")
    assert result.text.startswith("em("), result.text


def test_the_files_earlier_definitions_head_the_code_when_the_window_leaves_them_out(engine, monkeypatch):
    text = MAIN.read_text()
    monkeypatch.setattr(engine.settings.completion, "prefix_tokens", 24)  # the window starts after the imports
    with_block = engine.complete(CompletionRequest(str(MAIN), text, 13, 4), threading.Event(), "none").trace
    assert [use.source for use in with_block.file_context] and with_block.file_context[0].path == str(MAIN)
    assert all(use.end_line <= 13 for use in with_block.file_context)  # before the cursor
    monkeypatch.setattr(engine.settings.completion, "file_context_tokens", 0)
    without = engine.complete(CompletionRequest(str(MAIN), text, 13, 4), threading.Event(), "none").trace
    assert without.file_context == [] and without.prompt_tokens < with_block.prompt_tokens
