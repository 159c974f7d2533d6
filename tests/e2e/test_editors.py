"""The editor set-ups of the README, as written, in real editors: each snippet is taken from
README.md, put where the README says, and must bring a completion from the real server."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aligncoder_lsp.config import Settings
from tests.conftest import FIXTURES

README = Path(__file__).parents[2] / "README.md"
PLACEHOLDER = "/path/to/.venv"
TIMEOUT_S = 180

pytestmark = pytest.mark.slow


def readme_snippet(bullet: str, language: str, number: int = 0) -> str:
    """Code block ``number`` in ``language`` of the README's list item starting with ``bullet``."""
    text = README.read_text()
    start = text.index(bullet)
    end = text.find("\n- **", start + 1)
    item = text[start:end if end > 0 else len(text)]
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```$", item, re.S | re.M)
    assert len(blocks) > number, f"no {language} block {number} under {bullet!r} in README.md"
    return textwrap.dedent(blocks[number][1])


def editor(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (Debian package {package}; ./setup.sh --test installs it)")
        pytest.skip(f"{name} is not installed (Debian package {package}; ./setup.sh --test installs it)")
    return path


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A copy of the fixture workspace made a git repository, as a user's project is."""
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "workspace", root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.fixture
def venv(tmp_path) -> Path:
    """Stands for the README's ``/path/to/.venv``: an ``aligncoder-lsp`` command that runs this
    checkout's server (with the user's model and index cache)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    command = bin_dir / "aligncoder-lsp"
    command.write_text(f"#!/bin/sh\nexport ALIGNCODER_LSP_CACHE='{Settings().resolved_cache_dir()}'\n"
                       f"exec '{sys.executable}' -m aligncoder_lsp \"$@\"\n")
    command.chmod(0o755)
    return bin_dir.parent


NAMES = "from shop.models import Cart\n\n\ndef item_names(cart: Cart) -> list[str]:\n    names = []\n    \n"
"""A file whose last line the embedded model completes with a loop: a multi-line suggestion."""


@pytest.mark.parametrize("menu", [False, True], ids=["default-completeopt", "menuone-noinsert"])
def test_the_readme_neovim_set_up_completes_with_omnifunc(menu, workspace, venv, tmp_path):
    nvim = editor("nvim", "neovim")
    config = tmp_path / "xdg" / "config" / "nvim"
    config.mkdir(parents=True)
    init = readme_snippet("- **Neovim**", "lua").replace(PLACEHOLDER, str(venv))
    if menu:
        init += readme_snippet("- **Neovim**", "lua", 1)
    (config / "init.lua").write_text(init)
    source = workspace / "app" / "names.py"
    source.write_text(NAMES)
    lines = NAMES.splitlines()
    line = len(lines) - 1
    out = tmp_path / "result.json"
    env = {**os.environ, "AC_LINE": str(line), "AC_COL": str(len(lines[line])), "AC_OUT": str(out),
           "AC_TIMEOUT_MS": str(TIMEOUT_S * 1000),
           **{f"XDG_{kind}_HOME": str(tmp_path / "xdg" / kind.lower()) for kind in ("CONFIG", "DATA", "STATE", "CACHE")}}
    process = subprocess.run(
        [nvim, "--headless", "-i", "NONE", "-n", "--cmd", "let g:loaded_python3_provider = 0", str(source),
         "-c", f"luafile {Path(__file__).with_name('nvim_omnifunc.lua')}", "-c", "cquit! 2"],
        env=env, cwd=workspace, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S + 30)
    result = json.loads(out.read_text())
    assert process.returncode == 0 and result["ok"], (result, process.stderr.decode())
    assert result["root"] == str(workspace)
    assert result["menu"] is menu
    assert result["lsp_item"]["data"]["generated_tokens"] > 0
    assert "\n" in result["lsp_item"]["documentation"]["value"].strip("`\n"), "expected a multi-line suggestion"
    buffer = result["lines"]
    assert all(isinstance(text, str) and "\n" not in text for text in buffer), f"a NUL was inserted: {buffer}"
    assert buffer == lines[:line] + [lines[line] + result["word"]] + lines[line + 1:]
    lsp_log = tmp_path / "xdg" / "cache" / "nvim" / "lsp.log"  # Neovim records a server's stderr as errors
    errors = [entry for entry in (lsp_log.read_text() if lsp_log.exists() else "").split("\n[")
              if '"stderr"' in entry and "resource_tracker" not in entry]  # that one: after the server ended
    assert not errors, errors


COUNTER = "package com.acme;\n\npublic class Counter {\n    private int count;\n\n    public void increment() {\n        \n"


@pytest.mark.parametrize(("place", "path", "text"), [
    ("init.el", "app/names.py", NAMES),
    ("init.el", "java/com/acme/Counter.java", COUNTER),
    (".dir-locals.el", "app/names.py", NAMES),
])
def test_the_readme_eglot_set_up_completes(place, path, text, workspace, venv, tmp_path):
    emacs = editor("emacs", "emacs-nox and elpa-eglot")
    snippet = readme_snippet("- **Emacs**", "elisp", 0 if place == "init.el" else 1).replace(PLACEHOLDER, str(venv))
    init = tmp_path / "init.el"
    (workspace / ".dir-locals.el" if place == ".dir-locals.el" else init).write_text(snippet)
    source = workspace / path
    source.write_text(text)
    lines = text.splitlines()
    out = tmp_path / "result.json"
    loads = ["-l", str(init)] if init.exists() else []
    env = {**os.environ, "HOME": str(tmp_path / "home"), "AC_FILE": str(source), "AC_LINE": str(len(lines) - 1),
           "AC_OUT": str(out), "AC_TIMEOUT_S": str(TIMEOUT_S)}
    process = subprocess.run(
        [emacs, "--batch", *loads, "-l", str(Path(__file__).with_name("eglot_complete.el"))],
        env=env, cwd=workspace, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S + 60)
    result = json.loads(out.read_text())
    assert process.returncode == 0 and result["ok"] is True, (result, process.stderr.decode()[-3000:])
    assert result["command"] == [str(venv / "bin" / "aligncoder-lsp"), "serve"]
    assert result["changed"] is True, "completion-at-point inserted nothing"
    inserted = result["lines"][len(lines) - 1][len(lines[-1]):]
    assert inserted.strip()
    assert result["lines"] == lines[:-1] + [lines[-1] + inserted, ""]  # one line inserted, as in every client
