"""The index stays correct through edits, deletions, moves, odd files and cache damage."""

import os
import threading
import time
from pathlib import Path

import pytest

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.workspace.watcher import Debouncer


def _files(index: WorkspaceIndex) -> set[str]:
    return {index.relative(path) for path in index._by_path if "filler" not in path}


def _found(index: WorkspaceIndex, query: str) -> set[str]:
    return {index.relative(snippet.path) for snippet, _ in index.search(query, 10)}


def _index(root: Path, cache: Path) -> WorkspaceIndex:
    index = WorkspaceIndex(IndexSettings(), WorkspaceIndex.cache_file_for(cache, [root]))
    index.build([root])
    return index


def test_edits_deletes_and_moves_on_disk(workspace, tmp_path):
    index = _index(workspace, tmp_path / "cache")
    assert _files(index) == {"pkg/__init__.py", "pkg/alpha.py", "Beta.java"}
    (workspace / "pkg" / "alpha.py").write_text("def gammaonly(y):\n    return y\n")
    (workspace / "pkg" / "new.py").write_text("DELTA_CONSTANT = 4\n")
    (workspace / "Beta.java").rename(workspace / "Renamed.java")
    index.apply_changes({workspace / "pkg" / "alpha.py", workspace / "pkg" / "new.py",
                         workspace / "Beta.java", workspace / "Renamed.java"})
    assert _files(index) == {"pkg/__init__.py", "pkg/alpha.py", "pkg/new.py", "Renamed.java"}
    assert _found(index, "gammaonly") == {"pkg/alpha.py"}
    assert _found(index, "alpha_function") == {"pkg/__init__.py"}
    assert _found(index, "betaMethod") == {"Renamed.java"}
    os.rename(workspace / "pkg", workspace / "moved")
    index.apply_changes({workspace / "pkg", workspace / "moved"})
    assert _files(index) == {"moved/__init__.py", "moved/alpha.py", "moved/new.py", "Renamed.java"}


def test_odd_files_are_skipped_and_links_never_followed(workspace, tmp_path):
    (workspace / "binary.py").write_bytes(b"\x00\x01\x02 binary")
    (workspace / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    os.symlink(workspace, workspace / "pkg" / "loop")
    index = WorkspaceIndex(IndexSettings(), None)
    stats = index.build([workspace])
    assert stats.skipped == {"binary": 1, "not UTF-8": 1}
    assert _files(index) == {"pkg/__init__.py", "pkg/alpha.py", "Beta.java"}
    index.apply_changes({workspace / "pkg" / "loop", workspace / "binary.py"})
    assert _files(index) == {"pkg/__init__.py", "pkg/alpha.py", "Beta.java"}


def test_open_buffers_override_the_disk(workspace, tmp_path):
    index = _index(workspace, tmp_path / "cache")
    alpha = workspace / "pkg" / "alpha.py"
    index.set_file(str(alpha), "def bufferonly():\n    pass\n")
    alpha.write_text("def diskonly():\n    pass\n")
    index.apply_changes({alpha}, skip_path=lambda path: path == alpha)
    assert _found(index, "bufferonly") == {"pkg/alpha.py"}
    assert _found(index, "diskonly") == set()


def test_warm_restart_reuses_the_cache_and_sees_offline_changes(workspace, tmp_path):
    cache = tmp_path / "cache"
    _index(workspace, cache)
    (workspace / "pkg" / "alpha.py").write_text("def changed_while_closed():\n    pass\n")
    (workspace / "Beta.java").unlink()
    index = WorkspaceIndex(IndexSettings(), WorkspaceIndex.cache_file_for(cache, [workspace]))
    stats = index.build([workspace])
    assert stats.loaded_from_cache and stats.reindexed == 1 and stats.removed == 1
    assert _found(index, "changed_while_closed") == {"pkg/alpha.py"}
    assert _files(index) == {"pkg/__init__.py", "pkg/alpha.py"}


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\x80\x05\x95 truncated pickle"])
def test_corrupt_cache_is_rebuilt(workspace, tmp_path, damage, caplog):
    cache = tmp_path / "cache"
    index = _index(workspace, cache)
    index.cache_file.write_bytes(damage)
    rebuilt = WorkspaceIndex(IndexSettings(), index.cache_file)
    stats = rebuilt.build([workspace])
    assert not stats.loaded_from_cache
    assert _files(rebuilt) == {"pkg/__init__.py", "pkg/alpha.py", "Beta.java"}
    assert "rebuilding" in caplog.text
    assert WorkspaceIndex(IndexSettings(), index.cache_file).build([workspace]).loaded_from_cache


def test_cache_from_other_settings_is_rebuilt(workspace, tmp_path):
    cache = tmp_path / "cache"
    _index(workspace, cache)
    other = WorkspaceIndex(IndexSettings(block_lines=5), WorkspaceIndex.cache_file_for(cache, [workspace]))
    assert not other.build([workspace]).loaded_from_cache


def test_dependencies_follow_edits(workspace, tmp_path):
    index = _index(workspace, tmp_path / "cache")
    main = str(workspace / "main.py")
    found = index.dependencies(main, "from pkg import alpha_function\n")
    assert [s.symbol for s in found] == ["alpha_function"]
    (workspace / "pkg" / "alpha.py").write_text("def alpha_function(x, y: int = 2):\n    return x\n")
    index.apply_changes({workspace / "pkg" / "alpha.py"})
    assert "y: int = 2" in index.dependencies(main, "from pkg import alpha_function\n")[0].text


def test_debouncer_batches_a_burst_once():
    batches = []
    done = threading.Event()
    debouncer = Debouncer(lambda items: (batches.append(items), done.set()), quiet=0.1, max_wait=5)
    for number in range(1000):
        debouncer.add({Path(f"f{number}.py")})
    assert done.wait(5)
    time.sleep(0.3)
    debouncer.stop()
    assert len(batches) == 1 and len(batches[0]) == 1000


def test_debouncer_flushes_by_max_wait_under_constant_events():
    batches = []
    debouncer = Debouncer(batches.append, quiet=0.2, max_wait=0.3)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        debouncer.add({Path("busy.py")})
        time.sleep(0.02)
    debouncer.stop()
    assert len(batches) >= 2


def test_several_roots(workspace, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "omega.py").write_text("def omegaonly():\n    pass\n")
    index = WorkspaceIndex(IndexSettings(), WorkspaceIndex.cache_file_for(tmp_path / "cache", [workspace, other]))
    index.build([workspace, other])
    assert _found(index, "omegaonly") == {"omega.py"}
    assert _found(index, "alphaonly") | _found(index, "alpha_function") == {"pkg/alpha.py", "pkg/__init__.py"}


def test_continuation_is_what_follows_a_snippet_in_its_file(tmp_path):
    text = "\n\n".join(f"def f{n}():\n    return {n}" for n in range(6))
    (tmp_path / "m.py").write_text(text)
    index = WorkspaceIndex(IndexSettings(block_lines=4))
    index.build([tmp_path])
    (first, _), = [hit for hit in index.search("f0", 5) if "f0" in hit[0].text]
    assert index.continuation(first, 3) == "def f1():\n    return 1\ndef f2():"
    last = index.search("f5", 1)[0][0]
    assert index.continuation(last, 3) == ""
