"""The eval command in every mode, with the real embedded models, on a task whose ground
truth and suffix carry a canary token, in a temporary folder reached through a symlink:
the token must reach no index, prompt, encoder input, trace, report or cache file.

The prompts are caught where the engine hands them to the models (the generator, the
drafter and the encoder), so the check does not rely on what the trace chooses to keep.
"""

import argparse
import json

import pytest

from aligncoder_lsp.config import MODES, Settings
from aligncoder_lsp.evaluation import runner
from aligncoder_lsp.index.embeddings import Encoder
from aligncoder_lsp.models.embedded import embedded_generator
from aligncoder_lsp.models.llama_backend import Drafter, LlamaModel
from aligncoder_lsp.pipeline import CompletionEngine
from tests.canary import CANARY, build_repos, files_holding, symlinked_tmp, write_tasks

pytestmark = pytest.mark.slow

USED_BY = {
    "none": {"generator"},
    "bm25": {"generator"},
    "aligncoder": {"generator", "drafter", "encoder"},
    "aligncoder-no-enhance": {"generator", "encoder"},
    "selective": {"generator", "drafter", "encoder"},
}


@pytest.fixture
def model_inputs(monkeypatch) -> dict[str, list[str]]:
    """Every text given to a model, and every indexed snippet holding the canary at the
    start of a completion, by where it was seen."""
    seen: dict[str, list[str]] = {"generator": [], "drafter": [], "encoder": [], "index": []}

    def spy(cls, name, record):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            record(self, *args, **kwargs)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    spy(LlamaModel, "generate", lambda self, prompt, *a, suffix="", **k: seen["generator"].append(prompt + suffix))
    spy(Drafter, "draft", lambda self, prompt, *a, **k: seen["drafter"].append(prompt))
    spy(Encoder, "encode", lambda self, texts, *a, **k: seen["encoder"].extend(texts))

    def audit_index(engine, request, *args, **kwargs):
        index = engine.index
        seen["index"] += [s.text for s, _ in index.search(CANARY, max(index.snippet_count, 1)) if CANARY in s.text]

    spy(CompletionEngine, "complete", audit_index)
    return seen


def test_every_mode_keeps_the_canary_out(tmp_path, monkeypatch, model_inputs, capsys):
    repos = build_repos(tmp_path)
    real_tmp, _ = symlinked_tmp(tmp_path, monkeypatch)
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    settings = Settings()
    settings.model.generator = str(embedded_generator(settings.resolved_cache_dir()))
    settings.cache_dir = str(tmp_path / "cache")
    settings.model.max_tokens = 12
    settings.retrieval.drafts = 2
    settings.retrieval.draft_tokens = 12
    settings.retrieval.threshold = 0.0  # selective retrieves after its first attempt: both paths run
    out = tmp_path / "out"
    leaks: dict[str, list[str]] = {}
    for mode in MODES:
        args = argparse.Namespace(tasks=tasks, repos=repos, mode=mode, limit=None, out=out / f"eval-{mode}.json")
        assert runner.main(args, settings) == 0
        (result,) = json.loads((out / f"eval-{mode}.json").read_text())["per_task"]
        if mode != "none":
            assert result["retrieved"] and result["trace"]["snippets"], f"{mode} retrieved nothing"
        used = {where for where in ("generator", "drafter", "encoder") if model_inputs[where]}
        assert used == USED_BY[mode], f"{mode} gave text to {used}; the check would miss a model"
        leaks[mode] = [where for where, texts in model_inputs.items() if any(CANARY in text for text in texts)]
        leaks[mode] += [key for key in ("prediction", "trace") if CANARY in json.dumps(result[key])]
        for texts in model_inputs.values():
            texts.clear()
    assert leaks == {mode: [] for mode in MODES}
    assert CANARY not in capsys.readouterr().out
    assert files_holding(out, CANARY) == []
    assert files_holding(tmp_path / "cache", CANARY) == []
    assert files_holding(real_tmp, CANARY) == []
