"""Fitting the query tower on rewards, and serving the checkpoint it writes."""

import json

import numpy as np
import pytest
import torch

from aligncoder_lsp.index.embeddings import QUERY_TOWER_FILE, Encoder, retriever_identity
from aligncoder_lsp.models.embedded import ModelUnavailable, embedded_retriever
from aligncoder_lsp.training.fit import Example, FitSettings, _loss, examples, examples_of, ranking_metrics, run_fit
from aligncoder_lsp.training.store import CANDIDATES, SCORES, Hole, Run, RunError, Shard


def _example(rewards, lexical=None) -> Example:
    rewards = np.array(rewards, dtype=np.float32)
    lexical = np.zeros_like(rewards) if lexical is None else np.array(lexical, dtype=np.float32)
    return Example("h", "r", "train", "q", [f"t{i}" for i in range(len(rewards))], lexical, rewards, 0)


def test_the_training_loss_is_the_reported_kl_and_the_hard_loss_picks_the_best():
    example = _example([-1.0, -0.4, -2.0])
    scores = torch.tensor([0.3, 0.1, 0.2])
    settings = FitSettings()
    for scale in (1 / settings.student_temperature, 7.5):
        reported = ranking_metrics([example], [scores.numpy()], settings, scale)["kl"]
        log_scale = torch.tensor(np.log(scale))
        assert float(_loss([scores], [example], settings, log_scale)) == pytest.approx(reported, abs=1e-3)
    hard = FitSettings(loss="hard")
    assert float(_loss([scores], [example], hard, torch.tensor(np.log(20.0)))) == pytest.approx(
        -float(torch.log_softmax(scores * 20.0, 0)[1]), abs=1e-4)
    perfect = ranking_metrics([example], [example.rewards * settings.student_temperature / settings.teacher_temperature],
                              settings)
    assert perfect["kl"] == pytest.approx(0.0, abs=1e-4) and perfect["hit_at_1"] == 1.0


def test_metrics_compare_the_first_choice_with_bm25_and_the_best():
    example = _example([-1.0, -0.4, -2.0])  # BM25's first is position 0
    metrics = ranking_metrics([example], [np.array([0.0, 0.0, 1.0])], FitSettings())
    assert metrics["hit_at_1"] == 0.0
    assert (metrics["reward_first"], metrics["reward_bm25_first"], metrics["reward_best"]) == (-2.0, -1.0, -0.4)


CLASSES = ["class Account:\n    pass", "class Ledger:\n    rows = []", "class Invoice:\n    total = 0"]
FUNCTIONS = ["def account(x):\n    return x", "def ledger(rows):\n    return rows", "def invoice(total):\n    return total"]


def _run(tmp_path, holes: int = 24, repo=lambda n: "r", name: str = "run") -> Run:
    """Holes whose rewards favour the class among each hole's candidates, whatever the query."""
    run = Run(tmp_path / name)
    made = [Hole(f"{repo(n)}/m{n}.py@{n}", repo(n), f"m{n}.py", 1, 0, n, "x = 1", "line", False,
                 "held-out" if n % 4 == 0 else "train") for n in range(holes)]
    run.write_holes(made)
    (tmp_path / name / "manifest.json").write_text(json.dumps({"repositories": [], "generator": "g.gguf"}))
    for n, hole in enumerate(made):
        texts = [FUNCTIONS[n % 3], CLASSES[n % 3], FUNCTIONS[(n + 1) % 3], CLASSES[(n + 2) % 3]]
        items = [{"id": f"bm25:{i}", "source": "bm25", "score": 10.0 - i, "text": text} for i, text in enumerate(texts)]
        items.append({"id": "stop", "source": "stop", "score": 0.0, "text": ""})
        run.shard_file(CANDIDATES, Shard()).append(
            {"hole": hole.id, "enhanced_query": f"value_{n} = compute({n})", "candidates": items})
        rewards = [-2.0 if text.startswith("def") else -0.5 for text in texts] + [-1.5]
        run.shard_file(SCORES, Shard()).append({"hole": hole.id, "ids": [c["id"] for c in items], "ll": rewards})
    return run


def test_fitting_learns_what_the_rewards_prefer_and_serves_as_a_query_tower(tmp_path):
    run = _run(tmp_path)
    found = examples(run)
    assert len(found) == 24 and all(len(example.texts) == 4 for example in found)  # the stop item is left out
    out = tmp_path / "retriever"
    report = run_fit([run], embedded_retriever(), out,
                     FitSettings(epochs=3, batch_holes=6, learning_rate=2e-4, lexical_weight=0.0))
    best = report["passes"][report["best_pass"] - 1]["held_out"]
    assert best["kl"] < report["untrained"]["held_out"]["kl"]
    assert best["reward_first"] > report["untrained"]["held_out"]["reward_first"]
    assert json.loads((out / QUERY_TOWER_FILE).read_text()) == {"documents": "embedded"}
    assert "Held-out ranking" in (out / "README.md").read_text()

    trained, base = Encoder(str(out), "float32"), Encoder("", "float32")
    snippets = CLASSES + FUNCTIONS
    assert np.allclose(trained.encode(snippets), base.encode(snippets), atol=1e-6)  # stored vectors stay valid
    query = ["value_99 = compute(99)"]
    assert not np.allclose(trained.encode(query, queries=True), base.encode(query, queries=True), atol=1e-3)
    assert retriever_identity(str(out), "float32", 256) == retriever_identity("", "float32", 256)


def test_runs_fitted_together_hold_out_a_repository_held_out_in_any_of_them(tmp_path):
    python = _run(tmp_path, 8, repo=lambda n: "held" if n % 4 == 0 else "lib", name="python")
    java = _run(tmp_path, 8, repo=lambda n: "other" if n % 4 == 0 else "held", name="java")
    scores = tmp_path / "python" / SCORES / Shard().file_name
    scores.write_text("".join(line + "\n" for line in scores.read_text().splitlines() if '"held/' not in line))
    joined = examples_of([python, java])  # "held" is held out in the python run, though none of it is scored there
    assert len(joined) == 14
    assert {example.split for example in joined if example.repo == "held"} == {"held-out"}
    assert {example.split for example in joined if example.repo == "lib"} == {"train"}


def test_a_damaged_query_tower_is_a_clear_error(tmp_path):
    folder = tmp_path / "tower"
    folder.mkdir()
    (folder / QUERY_TOWER_FILE).write_text("{not json")
    with pytest.raises(ModelUnavailable, match="unreadable"):
        Encoder(str(folder)).encode(["x"])
    (folder / QUERY_TOWER_FILE).write_text(json.dumps({"documents": 3}))
    with pytest.raises(ModelUnavailable, match="names no snippet retriever"):
        Encoder(str(folder)).encode(["x"])
    assert retriever_identity(str(folder), "float32", 256).startswith("unavailable|")


def test_fitting_without_held_out_scores_says_what_to_run(tmp_path):
    run = _run(tmp_path, holes=3)  # hole 0 is the only held-out one
    (tmp_path / "run" / SCORES / Shard().file_name).write_text("")
    with pytest.raises(RunError, match="train score"):
        run_fit([run], embedded_retriever(), tmp_path / "out", FitSettings())
