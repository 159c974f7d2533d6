"""Benchmark honesty: nothing at or after a task's cursor reaches the index, even when the
temporary folder is reached through a symlink (macOS: /tmp -> /private/tmp).

The engines here are fakes that retrieve with the real index (BM25), so the tests run
without models; tests/e2e/test_eval_honesty.py runs every mode with the real ones.
"""

import tarfile

import pytest

from aligncoder_lsp.config import Settings
from aligncoder_lsp.evaluation import calibrate, runner
from aligncoder_lsp.evaluation.tasks import HonestyViolation, check_honest, load_tasks, materialize, prefix_only
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.llama_backend import Generation
from aligncoder_lsp.pipeline import Completion, Trace
from aligncoder_lsp.retrieval.coarse import coarse_retrieve, query_from_prefix
from tests.canary import CANARY, REPO, TARGET, build_repos, symlinked_tmp, task_record, write_tasks


class RetrievingEngine:
    """Stands in for the CompletionEngine: retrieves as the bm25 mode does and keeps what it
    saw, and which indexed files held the canary when it was asked."""

    def __init__(self, settings, index):
        self.index = index
        self.retrieved: list[str] = []
        self.canary_in_index: list[str] = []

    def _retrieve(self, request) -> None:
        self.canary_in_index += _indexed_with_canary(self.index)
        query = query_from_prefix(request.text)
        self.retrieved += [snippet.text for snippet, _ in coarse_retrieve(self.index, query, 5, request.path)]

    def complete(self, request, cancel, mode=None):
        self._retrieve(request)
        return Completion("", Trace(mode=mode or "none"))

    def attempt(self, request, cancel):
        self._retrieve(request)
        return Completion("", Trace()), Generation("", 0, 0, 0, 0.0, 0.0, "max_tokens", [])


@pytest.fixture
def engines(monkeypatch):
    made: list[RetrievingEngine] = []

    def make(settings, index):
        made.append(RetrievingEngine(settings, index))
        return made[-1]

    monkeypatch.setattr(runner, "CompletionEngine", make)
    monkeypatch.setattr(calibrate, "CompletionEngine", make)
    return made


def _indexed_with_canary(index: WorkspaceIndex) -> list[str]:
    return [snippet.path for snippet, _ in index.search(CANARY, max(index.snippet_count, 1)) if CANARY in snippet.text]


# -- materialize -----------------------------------------------------------------------------


def test_materialize_returns_the_resolved_folder_under_a_symlinked_workdir(tmp_path, monkeypatch):
    repos = build_repos(tmp_path)
    with tarfile.open(repos / "packed.tar.gz", "w:gz") as archive:
        archive.add(repos / REPO, arcname="packed")
    _, link = symlinked_tmp(tmp_path, monkeypatch)
    for name in (REPO, "packed"):
        root = materialize(repos, name, link)
        assert root == root.resolve() and (root / TARGET).is_file()


# -- eval ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["symlinked tmp", "symlink in the repository"])
def test_eval_retrieves_nothing_after_the_cursor(tmp_path, monkeypatch, engines, alias):
    repos = build_repos(tmp_path)
    if alias == "symlinked tmp":
        symlinked_tmp(tmp_path, monkeypatch)
    else:
        (repos / REPO / "shop" / "orders_alias.py").symlink_to("orders.py")
    tasks = load_tasks(write_tasks(tmp_path / "tasks.jsonl"))
    results = runner.run(tasks, repos, "bm25", Settings(), progress=False)
    assert len(results) == 1
    (engine,) = engines
    assert engine.retrieved, "the task retrieved nothing; the check would be empty"
    assert engine.canary_in_index == []
    assert not [text for text in engine.retrieved if CANARY in text]


def test_eval_refuses_a_task_whose_canary_sits_in_another_file(tmp_path, monkeypatch, engines):
    repos = build_repos(tmp_path)
    (repos / REPO / "shop" / "copied.py").write_text(f"{CANARY} = 1\n")
    symlinked_tmp(tmp_path, monkeypatch)
    tasks = load_tasks(write_tasks(tmp_path / "tasks.jsonl"))
    with pytest.raises(HonestyViolation, match="shop/copied.py"):
        runner.run(tasks, repos, "bm25", Settings(), progress=False)


# -- the invariant ---------------------------------------------------------------------------


def test_prefix_only_reduces_every_path_of_the_target_and_restores_it(tmp_path):
    repos = build_repos(tmp_path)
    root = (repos / REPO).resolve()
    (root / "shop" / "orders_alias.py").symlink_to(root / TARGET)
    index = WorkspaceIndex(Settings().index)
    index.build([root])
    assert _indexed_with_canary(index) == [str(root / TARGET)]  # in full (a link is never indexed under its own name)
    record = task_record()
    with prefix_only(index, root / TARGET, record["prefix"], CANARY):
        assert _indexed_with_canary(index) == []
    assert {index.relative(path) for path in _indexed_with_canary(index)} == {TARGET}


def test_check_finds_the_full_file_indexed_under_another_name(tmp_path):
    repos = build_repos(tmp_path)
    root = (repos / REPO).resolve()
    index = WorkspaceIndex(Settings().index)
    index.build([root])
    link = tmp_path / "link-to-repo"
    link.symlink_to(root, target_is_directory=True)
    record = task_record()
    index.set_file(str(link / TARGET), record["prefix"])  # what the old eval did under a symlinked tmp
    with pytest.raises(HonestyViolation, match="not in the task's prefix"):
        check_honest(index, link / TARGET, record["prefix"])


@pytest.mark.parametrize("change, message", [
    ({"canary": "price_with_tax"}, "before the cursor"),
    ({"canary": "not_in_the_task"}, "after the cursor"),
])
def test_load_tasks_rejects_a_canary_that_proves_nothing(tmp_path, change, message):
    path = write_tasks(tmp_path / "tasks.jsonl", {**task_record(), **change})
    with pytest.raises(ValueError, match=message):
        load_tasks(path)


def test_load_tasks_keeps_the_canary(tmp_path):
    (task,) = load_tasks(write_tasks(tmp_path / "tasks.jsonl"))
    assert task.canary == CANARY and CANARY in task.groundtruth


# -- calibrate -------------------------------------------------------------------------------


def _calibration_repos(parent):
    """A repository whose only samplable statement (a call, 20+ lines in) holds the canary."""
    repos = build_repos(parent)
    lines = [f"value_{number} = {number}" for number in range(24)]
    lines += [f"{CANARY} = price_with_tax(value_3)", f"{CANARY}_again = value_4", ""]
    ledger = repos / REPO / "shop" / "ledger.py"
    ledger.write_text("from shop.pricing import price_with_tax\n" + "\n".join(lines))
    (repos / REPO / TARGET).write_text("def place(amount):\n    return amount\n")
    return repos


def test_calibrate_indexes_nothing_after_the_masked_statement_under_a_symlinked_tmp(tmp_path, monkeypatch, engines):
    repos = _calibration_repos(tmp_path)
    symlinked_tmp(tmp_path, monkeypatch)
    features, plain, retrieved = calibrate.collect(repos, [REPO], 1, {}, Settings(), seed=0)
    assert len(plain) == 1 and features.shape[0] == 1
    (engine,) = engines
    assert engine.retrieved and engine.canary_in_index == []
    assert not [text for text in engine.retrieved if CANARY in text]


def test_check_finds_a_definition_past_the_cursor_whose_lines_repeat_earlier_ones(tmp_path):
    (tmp_path / "repo").mkdir()
    root = (tmp_path / "repo").resolve()
    target = root / "twice.py"
    prefix = "def late():\n    pass\n"
    target.write_text(prefix)
    index = WorkspaceIndex(Settings().index)
    index.build([root])
    index.set_file(str(target), prefix + "\n" * 17 + "def late():\n    pass\n")  # every snippet is in the prefix
    with pytest.raises(HonestyViolation, match="definition late reaches past"):
        check_honest(index, target, prefix)
    index.set_file(str(target), prefix)
    check_honest(index, target, prefix)
