"""Training phases without a model: mining holes, the run's files, shards and resumption."""

import gzip
import json
import random
import tarfile
from pathlib import Path

import pytest

from aligncoder_lsp.cli import main
from aligncoder_lsp.config import Settings
from aligncoder_lsp.models.prompts import ContextPiece, fit_context
from aligncoder_lsp.training.corpus import Repository, describe, unique_names
from aligncoder_lsp.training.mine import MineSettings, code_lines, cuts_of_file, run_mine
from aligncoder_lsp.training.store import Hole, Progress, Run, RunError, Shard, ShardFile


def words(text: str) -> int:
    return len(text.split())


GEOMETRY = '''"""Points and distances."""

import math


class Point:
    def __init__(self, x: float, y: float):
        self.x = x
        self.y = y


def distance(a: Point, b: Point) -> float:
    return math.hypot(a.x - b.x, a.y - b.y)
'''


def _app(regions: int) -> str:
    lines = ["from alpha.geometry import (", "    Point,", "    distance,", ")", "import os", "", ""]
    for n in range(regions):
        lines += [f"def path_{n}(points):",
                  f'    """Length of path {n}.',
                  "",
                  "    Only prose here: it is never a target.",
                  '    """',
                  "    # a comment line",
                  f"    start = Point({n}, 0)  ",  # trailing spaces stay in the file
                  f"    total = sum(len(p) for p in points) + {n}",
                  f"    return distance(start, Point(total, {n})) + os.sep.count('/')",
                  ""]
    return "\n".join(lines) + "\n"


def _repo(root: Path, name: str, regions: int = 12) -> Path:
    package = root / name / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "geometry.py").write_text(GEOMETRY.replace("alpha", name))
    (package / "app.py").write_text(_app(regions).replace("alpha", name))
    return root / name


def test_code_lines_leave_out_blank_comment_docstring_and_import_lines_even_in_brackets():
    text = _app(1)
    lines = text.split("\n")
    kept = {lines[n].strip() for n in code_lines(text, "python")}
    assert kept == {"def path_0(points):", "start = Point(0, 0)", "total = sum(len(p) for p in points) + 0",
                    "return distance(start, Point(total, 0)) + os.sep.count('/')"}


def test_cuts_are_one_per_region_line_aligned_and_within_the_token_bound():
    text = _app(60)
    settings = MineSettings(max_target_tokens=20)
    cuts = cuts_of_file(text, "python", {"Point", "distance"}, settings, words, random.Random(1))
    lines = text.split("\n")
    assert len({cut.line // settings.region_lines for cut in cuts}) == len(cuts) > 20
    assert {cut.shape for cut in cuts} == {"line", "lines", "mid-line"}
    for cut in cuts:
        line = lines[cut.line]
        assert words(cut.target) <= 20
        assert "\n".join(lines[cut.line:])[cut.column:].startswith(cut.target)
        if cut.shape == "line":
            assert cut.column == len(line) - len(line.lstrip()) and cut.target == line.strip()
        elif cut.shape == "lines":
            assert 2 <= cut.target.count("\n") + 1 <= 3
        else:
            assert cut.column > len(line) - len(line.lstrip()) and "\n" not in cut.target
            assert line[cut.column - 1] in ".(" or line[cut.column - 1].isalnum() or line[cut.column - 1] == "_"


def test_lines_that_use_names_of_other_files_are_favoured():
    text = _app(40)
    favoured = cuts_of_file(text, "python", {"Point", "distance"}, MineSettings(cross_file_weight=1000.0), words,
                            random.Random(0))
    plain = cuts_of_file(text, "python", {"Point", "distance"}, MineSettings(cross_file_weight=1.0), words,
                         random.Random(0))
    share = lambda cuts: sum(cut.cross_file for cut in cuts) / len(cuts)  # noqa: E731
    assert share(favoured) > 0.95 and share(plain) < 0.8


def _mine(tmp_path: Path, names=("alpha", "beta", "gamma"), **options) -> tuple[Run, dict]:
    repositories = [Repository.from_path(_repo(tmp_path / "corpus", name)) for name in names]
    run = Run(tmp_path / "run")
    settings = MineSettings(**{"holes": 40, **options})
    return run, run_mine(run, repositories, Settings(), settings, words)


def test_mining_is_seeded_split_by_repository_and_stores_no_files(tmp_path):
    run, summary = _mine(tmp_path)
    holes = run.holes()
    assert summary["total"] == len(holes) == 40
    splits = {}
    for hole in holes:
        splits.setdefault(hole.repo, set()).add(hole.split)
    assert all(len(found) == 1 for found in splits.values())  # never split within a repository
    assert sorted(found.pop() for found in splits.values()) == ["held-out", "train", "train"]
    assert {hole.repo for hole in holes} == {"alpha", "beta", "gamma"}
    for hole in holes:  # the prefix is derived from the repository; only the target is stored
        text = (tmp_path / "corpus" / hole.repo / hole.path).read_text()
        assert text.startswith(hole.target, hole.offset)
        assert text[: hole.offset].count("\n") == hole.line
    with gzip.open(run.holes_path, "rt") as handle:
        assert max(len(line) for line in handle) < 400
    first = [hole.to_json() for hole in holes]
    Run(tmp_path / "run").holes_path.unlink()
    _mine_again = run_mine(run, [Repository.from_path(tmp_path / "corpus" / n) for n in ("alpha", "beta", "gamma")],
                           Settings(), MineSettings(holes=40), words)
    assert [hole.to_json() for hole in run.holes()] == first and _mine_again == summary


def test_identical_files_are_mined_once_and_vendored_folders_never(tmp_path):
    corpus = tmp_path / "corpus"
    _repo(corpus, "alpha")
    vendored = corpus / "alpha" / "alpha" / "_vendor"
    vendored.mkdir()
    (vendored / "copied.py").write_text(_app(5))
    copy = corpus / "copy" / "alpha"
    copy.mkdir(parents=True)
    (copy / "app.py").write_text((corpus / "alpha" / "alpha" / "app.py").read_text())
    run = Run(tmp_path / "run")
    run_mine(run, [Repository.from_path(corpus / "alpha"), Repository.from_path(corpus / "copy")], Settings(),
             MineSettings(holes=1000), words)
    paths = {(hole.repo, hole.path) for hole in run.holes()}
    assert ("copy", "alpha/app.py") not in paths and ("alpha", "alpha/app.py") in paths
    assert not any("_vendor" in path for _, path in paths)
    manifest = run.manifest()
    assert "alpha/_vendor/copied.py" not in manifest["repositories"][0]["files"]


def test_benchmark_lookalikes_are_excluded(tmp_path):
    corpus = tmp_path / "corpus"
    _repo(corpus, "alpha")
    benchmark = corpus / "benchmark"
    benchmark.mkdir()
    (benchmark / "same.py").write_text((corpus / "alpha" / "alpha" / "app.py").read_text())
    run = Run(tmp_path / "run")
    run_mine(run, [Repository.from_path(corpus / "alpha")], Settings(), MineSettings(holes=1000), words,
             [Repository.from_path(benchmark)])
    assert {hole.path for hole in run.holes()} == {"alpha/geometry.py"}


def test_manifest_names_version_licence_and_file_hashes(tmp_path):
    site = tmp_path / "site-packages"
    _repo(site, "alpha")
    info = site / "alpha_tools-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: alpha-tools\nVersion: 1.2.3\n"
                                   "Classifier: License :: OSI Approved :: BSD License\n\nLong text\n")
    (info / "top_level.txt").write_text("alpha\n")
    entry = describe(Repository.from_path(site / "alpha"), site / "alpha")
    assert (entry["version"], entry["licence"]) == ("1.2.3", "BSD License")
    bare = tmp_path / "bare"
    _repo(bare, "beta")
    (bare / "beta" / "LICENSE").write_text("\nMIT License\n\nCopyright...\n")
    assert describe(Repository.from_path(bare / "beta"), bare / "beta")["licence"] == "LICENSE: MIT License"
    run, _ = _mine(tmp_path, names=("alpha",), held_out=0.0)
    files = run.manifest()["repositories"][0]["files"]
    assert set(files) == {"alpha/__init__.py", "alpha/geometry.py", "alpha/app.py"}
    assert all(len(digest) == 16 for digest in files.values())


def test_tarballs_are_repositories(tmp_path):
    folder = _repo(tmp_path / "src", "alpha")
    tarball = tmp_path / "alpha.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="alpha")
    repository = Repository.from_path(tarball)
    assert repository.name == "alpha"
    with repository.open() as root:
        assert (root / "alpha" / "app.py").is_file()
    run = Run(tmp_path / "run")
    run_mine(run, [repository], Settings(), MineSettings(holes=5), words)
    assert len(run.holes()) == 5 and run.manifest()["repositories"][0]["source"] == str(tarball)
    with pytest.raises(RunError):
        Repository.from_path(tmp_path / "missing.zip")
    assert [r.name for r in unique_names([repository, repository])] == ["alpha", "alpha-2"]


def test_shards_partition_the_holes():
    ids = [f"repo/file.py@{n}" for n in range(300)]
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    owners = [[shard.holds(hole) for shard in shards].count(True) for hole in ids]
    assert owners == [1] * 300
    assert all(60 < sum(shard.holds(hole) for hole in ids) < 140 for shard in shards)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_a_torn_record_is_dropped_and_appends_continue_on_a_fresh_line(tmp_path):
    shard = ShardFile(tmp_path / "scores" / "shard-0-of-1.jsonl")
    shard.append({"hole": "a", "ll": [-1.0]})
    shard.append({"hole": "b", "ll": [-2.0]})
    data = shard.path.read_bytes()
    shard.path.write_bytes(data[:-7])  # a crash in the middle of writing b
    assert [record["hole"] for record in shard.read()] == ["a"]
    shard.repair()
    shard.append({"hole": "b", "ll": [-2.5]})
    assert [record["ll"] for record in shard.read()] == [[-1.0], [-2.5]]
    shard.path.write_bytes(shard.path.read_bytes() + b"{not json}\n")
    assert len(list(shard.read())) == 2


def test_status_counts_each_phase_and_estimates_what_is_left(tmp_path):
    run, _ = _mine(tmp_path)
    holes = run.holes()
    run.shard_file("candidates", Shard(0, 1)).append({"hole": holes[0].id, "candidates": [], "s": 2.5})
    scores = run.shard_file("scores", Shard(1, 2))
    scores.append({"hole": holes[0].id, "ids": ["stop"], "ll": [-1.0], "n": 3, "s": 12.0})
    scores.append({"hole": holes[1].id, "ids": ["stop"], "ll": [-1.0], "n": 3, "s": 18.0})
    status = run.status()
    assert (status["holes"], status["candidates"], status["scored"]) == (40, 1, 2)
    assert status["scores"] == {"shard-1-of-2.jsonl": 2}
    assert status["seconds_per_hole"] == 15.0 and status["eta_one_machine"] == "9m30s"
    assert status["candidates_seconds_per_hole"] == 2.5


def test_a_run_refuses_to_continue_with_other_settings(tmp_path):
    run, _ = _mine(tmp_path)
    run.settle("score", {"window_tokens": 384})
    run.settle("score", {"window_tokens": 384})
    with pytest.raises(RunError, match="window_tokens"):
        run.settle("score", {"window_tokens": 256})
    with pytest.raises(RunError, match="train mine"):
        Run(tmp_path / "elsewhere").holes()


def test_progress_reports_rate_and_eta():
    progress = Progress("score", 10, every=5, already=4)
    progress.started -= 60
    for _ in range(5):
        progress.tick()
    assert progress.line().startswith("score: 9/14 holes (5.00 holes/min, ETA 1m00s)")


def test_context_fitting_keeps_the_limit_the_budget_and_a_third_for_signatures():
    pieces = [ContextPiece("dep.py", "\n".join(f"def f{i}(a, b): ..." for i in range(20)), dependency=True),
              ContextPiece("a.py", "x = 1 " * 10), ContextPiece("b.py", "y " * 500), ContextPiece("c.py", "z = 3")]
    chosen = fit_context(iter(pieces), 80, 3, words)
    assert [position for position, _ in chosen] == [0, 1, 3]
    signature = chosen[0][1].text
    assert pieces[0].text.startswith(signature) and words(signature) <= 80 // 3 - 8
    assert fit_context(pieces, 80, 1, words) == chosen[:1]


def test_hole_records_round_trip(tmp_path):
    hole = Hole("r/a.py@10", "r", "a.py", 1, 4, 10, "x = 1", "line", False, "train")
    run = Run(tmp_path)
    run.write_holes([hole])
    assert run.holes() == [hole] and json.loads(json.dumps(hole.to_json())) == hole.to_json()


def test_mining_again_into_a_run_with_results_is_refused(tmp_path):
    run, _ = _mine(tmp_path)
    run.shard_file("scores", Shard()).append({"hole": run.holes()[0].id})
    with pytest.raises(RunError, match="new --out"):
        run_mine(run, [Repository.from_path(tmp_path / "corpus" / "alpha")], Settings(), MineSettings(), words)


def test_train_commands_explain_bad_input(tmp_path, capsys):
    assert main(["train", "status", "--out", str(tmp_path / "none")]) == 1
    assert "run `train mine` first" in capsys.readouterr().err
    run, _ = _mine(tmp_path)
    assert main(["train", "score", "--out", str(run.folder), "--shard", "2/2"]) == 1
    assert "0 <= i < n" in capsys.readouterr().err
    assert main(["train", "candidates", "--out", str(run.folder), "--repos", str(tmp_path / "nowhere.zip")]) == 1
    assert "neither a folder nor a tarball" in capsys.readouterr().err
    assert main(["train", "status", "--out", str(run.folder)]) == 0
    assert json.loads(capsys.readouterr().out)["holes"] == 40
