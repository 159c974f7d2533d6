"""The package as users install it: sdist -> wheel -> a fresh virtual environment, run from
outside the source tree, so that nothing of the checkout (grammars/, weights/, an editable
install) can stand in for what the wheel ships."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "deps" / "py"
NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "tests")


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=240, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist of a copy of the source tree (the build leaves no files in the checkout)."""
    work = tmp_path_factory.mktemp("sdist")
    shutil.copytree(ROOT, work / "source", ignore=NOT_SHIPPED)
    name = _run([sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('..'))"],
                cwd=work / "source").stdout.split()[-1]
    return work / name


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory) -> Path:
    """The wheel built from the sdist, as pip builds it on a user's machine (with this
    interpreter's setuptools when it is new enough, else in an isolated build environment)."""
    out = tmp_path_factory.mktemp("wheels")
    new_enough = int(metadata.version("setuptools").split(".")[0]) >= 77
    isolation = ["--no-build-isolation"] if new_enough else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", out, sdist])
    (built,) = out.glob("aligncoder_lsp-*.whl")
    return built


def _fresh_venv(folder: Path) -> Path:
    """A venv that sees this interpreter's installed packages through a .pth line (which
    does not run the .pth files there, so an editable install of the checkout stays out of
    sight)."""
    env = folder / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", env])
    site = Path(_run([env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return env


def _pip_install(env: Path, *what) -> None:
    _run([sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "-q", "--no-deps",
          "--no-index", "--no-build-isolation", *what])


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed."""
    env = _fresh_venv(tmp_path_factory.mktemp("venv"))
    _pip_install(env, wheel)
    return env


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ALIGNCODER_LSP_CACHE")}


def test_wheel_ships_the_grammars_and_the_policy(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    data = {name for name in names if not name.endswith(".py") and ".dist-info/" not in name}
    assert {f"aligncoder_lsp/grammars/{language}-{kind}.scm" for language in ("python", "java")
            for kind in ("imports", "definitions")} <= data
    assert "aligncoder_lsp/weights/selective-policy.json" in data
    assert not any(name.startswith(("grammars/", "weights/", "tests/")) for name in names)
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "aligncoder_lsp").rglob("*.py")}
    assert modules <= set(names), modules - set(names)


def test_build_requirement_admits_only_setuptools_that_reads_the_license_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)  # PEP 639 expression: setuptools >= 77
    (setuptools,) = [Requirement(r) for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_sdist_holds_the_top_level_data_folders(sdist):
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    assert {"grammars/python-imports.scm", "weights/selective-policy.json", "pyproject.toml"} <= names


def test_editable_install_reads_the_top_level_folders(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
    env = _fresh_venv(tmp_path)
    _pip_install(env, "-e", source)
    probe = ("from aligncoder_lsp.index.symbols import GRAMMARS; from aligncoder_lsp.retrieval.selective import "
             "DEFAULT_POLICY, SelectivePolicy; SelectivePolicy.load(); print(GRAMMARS); print(DEFAULT_POLICY)")
    grammars, policy = _run([env / "bin" / "python", "-c", probe], cwd=tmp_path, env=_clean_env()).stdout.split()
    assert Path(grammars) == source / "grammars" and Path(policy) == source / "weights" / "selective-policy.json"


@pytest.mark.slow
def test_installed_wheel_completes_with_dependencies_and_selective_policy(venv, tmp_path):
    python = venv / "bin" / "python"
    where = _run([python, "-c", "import aligncoder_lsp; print(aligncoder_lsp.__file__)"],
                 cwd=tmp_path, env=_clean_env()).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    def complete(settings: dict) -> dict:
        config = tmp_path / "settings.json"
        config.write_text(json.dumps(settings))
        done = _run([venv / "bin" / "aligncoder-lsp", "complete", FIXTURE / "app" / "main.py", "--line", "7",
                     "--col", "1", "--workspace", FIXTURE, "--json", "--cache-dir", tmp_path / "cache",
                     "--config", config], cwd=tmp_path, env=_clean_env())
        return json.loads(done.stdout)["trace"]

    trace = complete({"retrieval": {"mode": "bm25"}})
    dependencies = {use["path"] for use in trace["snippets"] if use["source"] == "dependency"}
    assert dependencies and all(path.startswith("src/shop/") for path in dependencies), trace["snippets"]

    trace = complete({"retrieval": {"mode": "selective", "threshold": 2.0}})
    assert trace["mode"] == "selective" and trace["retrieve_probability"] is not None
