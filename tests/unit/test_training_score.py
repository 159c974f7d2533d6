"""Candidates and scoring of two holes with the real embedded generator, through the CLI."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest
from aligncoder_lsp.models.llama_backend import TargetScorer
from aligncoder_lsp.pipeline import load_generator
from aligncoder_lsp.retrieval.selective import FEATURES
from aligncoder_lsp.training.store import Hole, Run
from aligncoder_lsp.training.validate import context_of, piece_of
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

MARKER = "zebra_quokka_after_cursor"

MAIN = '''from shop.models import Cart
from shop.pricing import add_vat, apply_discount


def discounted_price(price_cents: int, percent: float) -> int:
    """The price after a percentage discount, in whole cents."""
    return round(price_cents * (1 - percent / 100))


def demo() -> int:
    cart = Cart()
    cart.add_item("apple", 120, quantity=3)
    return add_vat(apply_discount(cart.total_cents(), 10))


def {marker}() -> str:
    return "{marker}"
'''.format(marker=MARKER)


def _train(*arguments: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "aligncoder_lsp", "train", *arguments], capture_output=True,
                          text=True, timeout=900, env=os.environ)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def _hole(text: str, line_text: str, repo: str, path: str) -> Hole:
    start = text.index(line_text)
    indent = len(line_text) - len(line_text.lstrip())
    offset = start + indent
    return Hole(f"{repo}/{path}@{offset}", repo, path, text[:offset].count("\n"), indent, offset,
                line_text.strip(), "line", True, "train")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    repo = base / "store"
    shutil.copytree(FIXTURES / "workspace" / "shop", repo / "shop")
    (repo / "app").mkdir()
    (repo / "app" / "main.py").write_text(MAIN)
    (repo / "backup").mkdir()
    (repo / "backup" / "main.py").write_text(MAIN)  # a copy must not leak the text after the cursor
    run_folder = base / "run"
    mined = _train("mine", "--repos", str(repo), "--out", str(run_folder), "--holes", "3")
    assert mined["total"] == 3
    run = Run(run_folder)
    holes = [_hole(MAIN, "    return round(price_cents * (1 - percent / 100))", "store", "app/main.py"),
             _hole(MAIN, '    cart.add_item("apple", 120, quantity=3)', "store", "app/main.py")]
    run.write_holes(holes)
    _train("candidates", "--out", str(run_folder))
    _train("score", "--out", str(run_folder), "--log-every", "1")
    return run, holes


def test_a_candidate_holding_the_target_beats_no_context(scored):
    run, holes = scored
    record = run.records("scores")[holes[0].id]
    candidates = run.records("candidates")[holes[0].id]["candidates"]
    assert record["ids"] == [c["id"] for c in candidates] and record["n"] > 5
    assert record["t"] > len(candidates) * record["n"]
    likelihood = dict(zip(record["ids"], record["ll"]))
    holding = [c["id"] for c in candidates if holes[0].target in c["text"]]
    assert holding, "BM25 should find apply_discount in shop/pricing.py"
    assert max(likelihood[i] for i in holding) > likelihood["stop"]
    assert all(-30 < value < 0 for value in record["ll"])


def test_nothing_at_or_after_the_cursor_reaches_the_candidates(scored):
    run, holes = scored
    for hole in holes:
        record = run.records("candidates")[hole.id]
        after = MAIN[hole.offset + len(hole.target):]
        assert record["candidates"][-1]["id"] == "stop"
        for candidate in record["candidates"]:
            assert ":app/main.py:" not in candidate["id"] and ":backup/main.py:" not in candidate["id"]
            for field in ("text", "shown"):
                assert MARKER not in candidate[field] and after.strip()[:40] not in candidate[field]
        assert MARKER not in record["query"] and all(MARKER not in draft for draft in record["drafts"])
        assert len(record["drafts"]) == 4
        assert len(record["selective"]) == len(FEATURES)  # the policy's features of a context-free attempt


def test_score_resumes_by_redoing_only_the_lost_hole(scored):
    run, holes = scored
    shard = run.folder / "scores" / "shard-0-of-1.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    seconds = [json.loads(line)["s"] for line in lines]
    print(f"\nseconds per hole scored: {seconds}")
    shard.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # the second hole was being written
    status = _train("score", "--out", str(run.folder))
    assert status["holes_done_now"] == 1 and status["scored"] == 2
    again = shard.read_bytes().splitlines(keepends=True)
    assert again[0] == lines[0] and len(again) == 2
    before, after = json.loads(lines[1]), json.loads(again[1])
    assert before["ids"] == after["ids"]
    assert all(abs(a - b) < 0.05 for a, b in zip(before["ll"], after["ll"]))
    assert _train("score", "--out", str(run.folder))["holes_done_now"] == 0


def test_target_scores_agree_with_the_generators_own_log_probabilities():
    model = load_generator(Settings())
    prompt = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    generation = model.generate(prompt, 12, threading.Event())
    tokens = model.tokenize(generation.text)
    assert len(tokens) == generation.generated_tokens  # the text tokenizes back to what was generated
    scorer = TargetScorer(model)
    first = scorer.score(prompt, generation.text)
    again = scorer.score(prompt, generation.text)  # all but the last prompt token reused
    scorer.close()
    assert again.reused_tokens == first.prompt_tokens - 1 and first.reused_tokens == 0
    reference = sum(generation.logprobs) / len(tokens)
    for scored in (first, again):  # batch sizes differ (one token per step there), so do the last digits
        assert len(scored.logprobs) == len(tokens)
        assert max(abs(a - b) for a, b in zip(scored.logprobs, generation.logprobs)) < 0.25
        assert abs(scored.mean - reference) < 0.05


def test_training_sees_what_serving_re_ranks():
    workspace = FIXTURES / "workspace"
    main = workspace / "app" / "main.py"
    index = WorkspaceIndex(Settings().index)
    index.build([workspace])
    request = CompletionRequest(str(main), main.read_text(), 13, 4)
    training = CompletionEngine(Settings(), index)  # fresh contexts on both sides: the same numbers
    training.drafter().reseed(7)
    inputs = training.rerank_inputs(request, threading.Event())
    engine = CompletionEngine(Settings(), index)
    engine.drafter().reseed(7)
    trace = engine.complete(request, threading.Event(), "aligncoder").trace
    assert trace.drafts == inputs.drafts and len(inputs.drafts) == 4
    offered = {(index.relative(s.path), s.start + 1, s.end) for s, _, _ in inputs.candidates}
    assert trace.snippets and {(use.path, use.start_line, use.end_line) for use in trace.snippets} <= offered
    assert {source for _, _, source in inputs.candidates} == {"bm25", "dependency"}
    engine.close_encoder()


def test_validation_rebuilds_the_served_context_block():
    workspace = FIXTURES / "workspace"
    main = workspace / "app" / "main.py"
    index = WorkspaceIndex(Settings().index)
    index.build([workspace])
    engine = CompletionEngine(Settings(), index)
    engine.drafter().reseed(7)
    coarse = engine.rerank_inputs(CompletionRequest(str(main), main.read_text(), 13, 4), threading.Event()).candidates
    pieces = [piece_of(engine.context_block([item], "python"), "python", item[2] == "dependency") for item in coarse]
    for order in (list(range(len(coarse))), list(range(len(coarse)))[::-1]):
        served = engine.context_block([coarse[i] for i in order], "python")
        assert context_of(order, pieces, Settings(), "python", engine.generator().count_tokens) == served


def test_validation_measures_each_rankers_prompt_on_held_out_holes(scored, tmp_path):
    run, _ = scored
    copy = Run(tmp_path / "run")
    shutil.copytree(run.folder, copy.folder)
    copy.write_holes([dataclasses.replace(hole, split="held-out") for hole in copy.holes()])
    report = _train("validate", "--out", str(copy.folder))
    assert report["holes"] == 2
    assert set(report["top_k_likelihood"]) == {"bm25", "untrained"}
    assert all(-30 < value < 0 for value in report["top_k_likelihood"].values())
    assert len(report["minus_untrained"]["bm25"]) == 3 and "kl" in report["ranking"]["untrained"]
