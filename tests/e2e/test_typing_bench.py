"""The typing benchmark end to end: the real server, the real model, one span of the fixture workspace."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_one_span_typed_against_the_real_server(tmp_path, fixture_workspace):
    before = {path: path.read_text() for path in fixture_workspace.rglob("*") if path.suffix in (".py", ".java")}
    out = tmp_path / "report.json"
    finished = subprocess.run(
        [sys.executable, "-m", "aligncoder_lsp", "bench", "typing", "--repos", str(fixture_workspace),
         "--spans", "1", "--max-lines", "1", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    (mode,) = report["modes"]
    assert mode["mode"] == "bm25" and mode["spans"] == 1 and not mode["failed_runs"]
    requests = mode["requests"]
    assert requests["sent"] >= 1 and requests["errors"] == 0
    assert mode["line_start_requests"]["sent"] >= 1  # the span's first position is a line start
    assert requests["shown"] <= requests["answered_in_time"]
    assert requests["answered_in_time"] + requests["cancelled"] == requests["sent"]  # each answered or cancelled
    characters, keys = mode["characters"], mode["keystrokes"]
    assert characters["total"] == characters["typed"] + characters["accepted"] > 0
    assert keys["needed"] == characters["total"]  # a single line: one keystroke per character
    assert keys["pressed"] <= keys["needed"]
    assert mode["cpu_seconds_per_typing_minute"] > 0
    assert mode["peak_rss_mib"]["server"] > 50
    assert "| bm25 | 1 |" in out.with_suffix(".md").read_text()
    after = {path: path.read_text() for path in fixture_workspace.rglob("*") if path.suffix in (".py", ".java")}
    assert after == before  # the benchmark types into a copy
