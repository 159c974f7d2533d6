"""Benchmark-only dependencies (the ``bench`` extra) are imported only by the benchmark
commands, which say how to install them when they are missing."""

import subprocess
import sys

import pytest

HIDE_AND_RUN = """
import sys
sys.modules[{module!r}] = None  # as if not installed
from aligncoder_lsp.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("module", ["tqdm", "matplotlib"])
@pytest.mark.parametrize("command", [["eval", "--tasks", "missing.jsonl", "--repos", "."],
                                     ["calibrate", "--repos", ".", "--out", "policy.json"]])
def test_benchmark_commands_name_the_extra_when_it_is_missing(module, command, tmp_path):
    done = subprocess.run([sys.executable, "-c", HIDE_AND_RUN.format(module=module, argv=command)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    needed = command[0] == "eval" or module == "tqdm"
    if needed:
        assert done.returncode == 1 and "aligncoder-lsp[bench]" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    else:
        assert "aligncoder-lsp[bench]" not in done.stderr


def test_runtime_modules_do_not_import_the_benchmark_dependencies():
    probe = ("import sys; sys.modules['tqdm'] = sys.modules['matplotlib'] = None; "
             "import aligncoder_lsp.server.features, aligncoder_lsp.cli, aligncoder_lsp.evaluation.calibrate")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
