"""A real editor: headless Neovim's built-in LSP client starts the server and asks for a
completion in a buffer."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

SCRIPT = Path(__file__).with_name("nvim_complete.lua")
WORKSPACE = FIXTURES / "workspace"
TIMEOUT_MS = 180_000

pytestmark = pytest.mark.slow


@pytest.fixture
def nvim() -> str:
    path = shutil.which("nvim")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("nvim is required in CI (Debian package neovim)")
        pytest.skip("nvim is not installed")
    return path


def test_neovim_gets_a_completion(nvim, tmp_path):
    out = tmp_path / "result.json"
    log = tmp_path / "server.log"
    env = dict(
        os.environ,
        AC_SERVER_CMD=json.dumps([sys.executable, "-m", "aligncoder_lsp", "serve", "--log-file", str(log)]),
        AC_ROOT=str(WORKSPACE),
        AC_FILE=str(WORKSPACE / "app" / "main.py"),
        AC_LINE="13",
        AC_COL="4",
        AC_OUT=str(out),
        AC_TIMEOUT_MS=str(TIMEOUT_MS),
    )
    process = subprocess.run(
        [nvim, "--headless", "--clean", "-u", "NONE", "-i", "NONE", "-n",
         "-c", f"luafile {SCRIPT}", "-c", "cquit! 2"],
        env=env, cwd=WORKSPACE, stdin=subprocess.DEVNULL, capture_output=True,
        timeout=TIMEOUT_MS / 1000 + 30,
    )
    result = json.loads(out.read_text())
    assert process.returncode == 0, (process.stderr.decode(), result)
    assert result["ok"], result
    items = result["result"]["items"]
    assert len(items) == 1
    assert items[0]["textEdit"]["newText"].strip()
    assert items[0]["data"]["generated_tokens"] > 0
    assert "server stopped (exit code 0)" in log.read_text()
