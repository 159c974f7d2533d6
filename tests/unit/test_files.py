import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aligncoder_lsp.workspace.files import Skip, discover, is_indexable, read_source

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _relative(root: Path, paths) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in paths)


def _git(root: Path, *arguments: str) -> str:
    environment = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(root), *arguments], check=True, capture_output=True,
                          env=environment).stdout.decode("utf-8", "surrogateescape")


def _git_listing(root: Path) -> list[str]:
    """What git itself says the workspace holds: tracked plus untracked files not ignored."""
    names = _git(root, "ls-files", "-z", "-co", "--exclude-standard").split("\0")
    return sorted(n for n in names if n.endswith((".py", ".java")) and (root / n).is_file()
                  and not (root / n).is_symlink())


def _finishes(function, *arguments, timeout: float = 5.0):
    """Run ``function`` in a thread; fail (instead of hanging the suite) when it blocks."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function(*arguments)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{function.__name__} blocked"
    return result[0]


def test_reader_guards(tmp_path):
    (tmp_path / "ok.py").write_text("x = 1\r\n")
    (tmp_path / "big.py").write_text("x" * 100)
    (tmp_path / "bin.py").write_bytes(b"\x00\x01binary")
    (tmp_path / "latin.py").write_bytes("caf\xe9".encode("latin-1"))
    assert read_source(tmp_path / "ok.py", 50).text == "x = 1\n"
    assert read_source(tmp_path / "big.py", 50) is Skip.TOO_LARGE
    assert read_source(tmp_path / "bin.py", 50) is Skip.BINARY
    assert read_source(tmp_path / "latin.py", 50) is Skip.UNDECODABLE
    assert read_source(tmp_path / "gone.py", 50) is Skip.VANISHED


def test_discovery_honours_gitignore_and_never_follows_dir_links(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("a = 1")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("b = 1")
    (tmp_path / "pkg" / "sub" / "gen.py").write_text("g = 1")
    (tmp_path / "pkg" / "sub" / ".gitignore").write_text("gen.py\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "c.py").write_text("c = 1")
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "Main.java").write_text("class Main {}")
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.py").write_text("x = 1")
    os.symlink(tmp_path, tmp_path / "pkg" / "loop")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("o = 1")
    os.symlink(outside, tmp_path / "escape.py")
    assert _relative(tmp_path, discover(tmp_path)) == ["Main.java", "pkg/a.py", "pkg/sub/b.py"]
    assert "build/c.py" in _relative(tmp_path, discover(tmp_path, include=["build/"]))


# -- special files -----------------------------------------------------------------------


def test_reading_a_fifo_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "x.py")
    assert _finishes(read_source, tmp_path / "x.py", 1000) is Skip.NOT_REGULAR


def test_discovery_skips_fifos_sockets_and_devices(tmp_path):
    (tmp_path / "real.py").write_text("r = 1")
    os.mkfifo(tmp_path / "fifo.py")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.py"))
    try:
        os.symlink("/dev/null", tmp_path / "device.py")
        assert _finishes(lambda: _relative(tmp_path, discover(tmp_path))) == ["real.py"]
        assert not is_indexable(tmp_path, tmp_path / "fifo.py")
        assert not is_indexable(tmp_path, tmp_path / "sock.py")
    finally:
        server.close()


# -- symlinks ----------------------------------------------------------------------------


def test_a_file_link_is_never_indexed_under_its_own_name(tmp_path):
    (tmp_path / "edited.py").write_text("secret_after_cursor = 1\n")
    os.symlink(tmp_path / "edited.py", tmp_path / "copy.py")
    os.symlink("edited.py", tmp_path / "relative_copy.py")
    assert _relative(tmp_path, discover(tmp_path)) == ["edited.py"]
    assert not is_indexable(tmp_path, tmp_path / "copy.py")
    assert not is_indexable(tmp_path, tmp_path / "relative_copy.py")
    assert read_source(tmp_path / "copy.py", 1000) is Skip.NOT_REGULAR


def test_symlink_loops_do_not_hang(tmp_path):
    os.symlink("b.py", tmp_path / "a.py")
    os.symlink("a.py", tmp_path / "b.py")
    os.symlink("self.py", tmp_path / "self.py")
    os.symlink(".", tmp_path / "here")
    assert _finishes(lambda: list(discover(tmp_path))) == []
    assert not is_indexable(tmp_path, tmp_path / "a.py")
    assert read_source(tmp_path / "self.py", 1000) is Skip.NOT_REGULAR


# -- ignore rules without git ------------------------------------------------------------


def test_nested_negation_reincludes_what_a_parent_ignored(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".gitignore").write_text("gen_*.py\n")
    (tmp_path / "sub" / ".gitignore").write_text("!gen_keep.py\n")
    for name in ("gen_a.py", "sub/gen_b.py", "sub/gen_keep.py", "sub/plain.py"):
        (tmp_path / name).write_text("x = 1")
    assert _relative(tmp_path, discover(tmp_path)) == ["sub/gen_keep.py", "sub/plain.py"]
    assert is_indexable(tmp_path, tmp_path / "sub" / "gen_keep.py")
    assert not is_indexable(tmp_path, tmp_path / "sub" / "gen_b.py")


def test_a_later_pattern_in_the_same_file_wins(tmp_path):
    (tmp_path / ".gitignore").write_text("!keep.py\n*.py\n")
    (tmp_path / "keep.py").write_text("k = 1")
    assert list(discover(tmp_path)) == []


def test_is_indexable_applies_the_ignore_rules(tmp_path):
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / "build").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / ".gitignore").write_text("build/\n")
    for name in (".venv/lib/v.py", "build/b.py", "src/s.py"):
        (tmp_path / name).write_text("x = 1")
    assert not is_indexable(tmp_path, tmp_path / ".venv" / "lib" / "v.py")
    assert not is_indexable(tmp_path, tmp_path / "build" / "b.py")
    assert is_indexable(tmp_path, tmp_path / "src" / "s.py")
    assert is_indexable(tmp_path, tmp_path / "build" / "b.py", include=["build/"])
    assert not is_indexable(tmp_path, tmp_path / "src" / "s.py", exclude=["src/"])


# -- ignore rules in git repositories ----------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "sub" / "deep").mkdir(parents=True)
    _git(root, "init", "-q")
    (root / ".gitignore").write_text("gen_*.py\nbuild/\n")
    (root / "sub" / ".gitignore").write_text("!gen_keep.py\n")
    (root / "build").mkdir()
    for name in ("main.py", "gen_a.py", "sub/gen_keep.py", "sub/gen_b.py", "sub/deep/d.py", "build/out.py",
                 "local.py", "dir with space/ünïcødé.py", "Tracked.java"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x = 1")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("local.py\n")
    (root / "tracked_but_ignored.py").write_text("t = 1")
    _git(root, "add", "-A")
    _git(root, "add", "-f", "tracked_but_ignored.py")
    (root / ".gitignore").write_text("gen_*.py\nbuild/\ntracked_but_ignored.py\n")
    return root


@needs_git
def test_discovery_in_a_git_repository_lists_what_git_lists(repo):
    found = _relative(repo, discover(repo))
    assert found == _git_listing(repo)
    assert "local.py" not in found and "sub/gen_keep.py" in found
    assert "tracked_but_ignored.py" in found and "dir with space/ünïcødé.py" in found


@needs_git
def test_is_indexable_agrees_with_git(repo):
    listed = set(_git_listing(repo))
    for path in repo.rglob("*.py"):
        if ".git" not in path.parts:
            relative = path.relative_to(repo).as_posix()
            assert is_indexable(repo, path) == (relative in listed), relative


@needs_git
def test_edits_to_ignore_files_are_seen(repo):
    (repo / "loose.py").write_text("l = 1")
    assert is_indexable(repo, repo / "loose.py")
    with (repo / ".gitignore").open("a") as rules:
        rules.write("loose.py\n")
    assert not is_indexable(repo, repo / "loose.py")
    (repo / "new.py").write_text("n = 1")
    assert is_indexable(repo, repo / "new.py")
    (repo / ".git" / "info" / "exclude").write_text("new.py\n")
    assert not is_indexable(repo, repo / "new.py")
    assert "new.py" not in _relative(repo, discover(repo))
    (repo / "sub" / "deep" / "fresh.py").write_text("f = 1")
    assert is_indexable(repo, repo / "sub" / "deep" / "fresh.py")
    (repo / "sub" / "deep" / ".gitignore").write_text("*.py\n")
    assert not is_indexable(repo, repo / "sub" / "deep" / "fresh.py")
    assert is_indexable(repo, repo / "sub" / "deep" / "d.py")  # tracked files stay listed
    (repo / "sub" / "deep" / ".gitignore").unlink()
    assert is_indexable(repo, repo / "sub" / "deep" / "fresh.py")


@needs_git
def test_new_files_and_directories_after_a_listing(repo):
    moved = repo.parent / "elsewhere"
    (moved / "inner").mkdir(parents=True)
    (moved / "inner" / "m.py").write_text("m = 1")
    time.sleep(0.2)  # so that the file is older than the listing below
    assert is_indexable(repo, repo / "main.py")
    moved.rename(repo / "moved")
    assert is_indexable(repo, repo / "moved" / "inner" / "m.py")
    (repo / "build" / "later.py").write_text("l = 1")
    assert not is_indexable(repo, repo / "build" / "later.py")


@needs_git
def test_discovery_under_a_folder_of_a_git_repository(repo):
    assert _relative(repo, discover(repo, under=repo / "sub")) == ["sub/deep/d.py", "sub/gen_keep.py"]
    assert list(discover(repo, under=repo / "build")) == []
    assert _relative(repo, discover(repo, include=["build/"], under=repo / "build")) == ["build/out.py"]


@needs_git
def test_a_workspace_folder_inside_a_repository(repo):
    sub = repo / "sub"
    assert _relative(sub, discover(sub)) == ["deep/d.py", "gen_keep.py"]
    assert not is_indexable(sub, sub / "gen_b.py")


@needs_git
def test_nested_repositories_are_listed_with_their_own_rules(repo):
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    _git(nested, "init", "-q")
    (nested / ".gitignore").write_text("skip.py\n")
    (nested / "keep.py").write_text("k = 1")
    (nested / "skip.py").write_text("s = 1")
    found = _relative(repo, discover(repo))
    assert "vendor/lib/keep.py" in found and "vendor/lib/skip.py" not in found
    assert is_indexable(repo, nested / "keep.py") and not is_indexable(repo, nested / "skip.py")


@needs_git
def test_git_mode_skips_links_and_special_files(repo):
    os.symlink(repo / "main.py", repo / "alias.py")
    os.mkfifo(repo / "pipe.py")
    _git(repo, "add", "alias.py")
    found = _finishes(lambda: _relative(repo, discover(repo)))
    assert "alias.py" not in found and "pipe.py" not in found and "main.py" in found
    assert not is_indexable(repo, repo / "alias.py")


@needs_git
def test_submodules_are_listed_and_an_empty_one_is_harmless(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    _git(library, "init", "-q")
    (library / "lib.py").write_text("l = 1")
    _git(library, "add", "-A")
    _git(library, "commit", "-qm", "library")
    outer = tmp_path / "outer"
    outer.mkdir()
    _git(outer, "init", "-q")
    (outer / "app.py").write_text("a = 1")
    _git(outer, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "lib")
    _git(outer, "add", "-A")
    _git(outer, "commit", "-qm", "outer")
    assert _relative(outer, discover(outer)) == ["app.py", "lib/lib.py"]
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(outer), str(clone))
    assert (clone / "lib").is_dir() and not any((clone / "lib").iterdir())
    assert _finishes(lambda: _relative(clone, discover(clone))) == ["app.py"]
    assert _finishes(lambda: _relative(clone, discover(clone / "lib"))) == []


@needs_git
def test_discovery_under_a_folder_of_a_nested_repository(repo):
    nested = repo / "vendor" / "lib"
    (nested / "inner").mkdir(parents=True)
    _git(nested, "init", "-q")
    (nested / "inner" / "i.py").write_text("i = 1")
    assert "vendor/lib/inner/i.py" in _relative(repo, discover(repo))
    assert _relative(repo, discover(repo, under=nested / "inner")) == ["vendor/lib/inner/i.py"]
    assert _relative(repo, discover(repo, under=nested)) == ["vendor/lib/inner/i.py"]


@needs_git
def test_a_repository_that_goes_away_falls_back_to_the_rules(repo):
    assert is_indexable(repo, repo / "main.py")
    shutil.rmtree(repo / ".git")
    assert not is_indexable(repo, repo / "gen_a.py")
    assert is_indexable(repo, repo / "sub" / "gen_keep.py")
    assert "sub/gen_keep.py" in _relative(repo, discover(repo))


def test_a_buffer_not_yet_saved_follows_the_ignore_rules(tmp_path):
    """Git lists only files on disk; an editor's new, unsaved file is judged by the rules."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / ".gitignore").write_text("build/\n")
    (root / "kept.py").write_text("x = 1\n")
    assert is_indexable(root, root / "kept.py")
    assert is_indexable(root, root / "new" / "unsaved.py")
    assert not is_indexable(root, root / "build" / "unsaved.py")


def test_a_workspace_inside_a_folder_its_repository_ignores_is_indexed_by_its_own_rules(tmp_path):
    """Opening, say, a package under an ignored virtual environment indexes that package."""
    repository = tmp_path / "repo"
    package = repository / "env" / "lib" / "package"
    (package / "sub").mkdir(parents=True)
    _git(repository, "init", "-q")
    (repository / ".gitignore").write_text("env/\n")
    (package / "core.py").write_text("x = 1\n")
    (package / "sub" / "helpers.py").write_text("y = 2\n")
    (package / ".gitignore").write_text("sub/\n")
    assert _relative(package, discover(package)) == ["core.py"]
    assert is_indexable(package, package / "core.py") and not is_indexable(package, package / "sub" / "helpers.py")
