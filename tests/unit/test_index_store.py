"""The index cache: never runs code, stays private, writes only what changed, keeps vectors
of one retriever apart from another's, and never holds the index lock during disk I/O."""

import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.index import store
from aligncoder_lsp.index.store import IndexStore
from aligncoder_lsp.index.workspace_index import WorkspaceIndex

EXPECTED = {"pkg/__init__.py", "pkg/alpha.py", "Beta.java"}


def _files(index: WorkspaceIndex) -> set[str]:
    return {index.relative(path) for path in index._by_path if "filler" not in path}


def _open(root: Path, cache: Path, **settings) -> WorkspaceIndex:
    return WorkspaceIndex(IndexSettings(**settings), WorkspaceIndex.cache_file_for(cache, [root]))


def _built(root: Path, cache: Path) -> WorkspaceIndex:
    index = _open(root, cache)
    index.build([root])
    return index


def _embed_all(index: WorkspaceIndex, dimension: int) -> None:
    keys = [key for key, _ in index.pending_embeddings(10**6)]
    vectors = np.random.default_rng(dimension).standard_normal((len(keys), dimension)).astype(np.float32)
    index.add_embeddings(keys, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


class _PlantedCode:
    """Unpickling this creates the marker file: what a planted pickle could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickle_is_never_loaded(workspace, tmp_path):
    cache = tmp_path / "cache"
    marker = tmp_path / "code-ran"
    cache_file = WorkspaceIndex.cache_file_for(cache, [workspace])
    cache_file.parent.mkdir(parents=True)
    (cache_file.parent / "index.pkl").write_bytes(pickle.dumps(_PlantedCode(marker)))
    index = _open(workspace, cache)
    index.build([workspace])
    assert not marker.exists()
    assert _files(index) == EXPECTED
    assert not (cache_file.parent / "index.pkl").exists()


def _tamper(cache_file: Path, *statements: str) -> None:
    with sqlite3.connect(cache_file) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


@pytest.mark.parametrize("statements", [
    ["DROP TABLE files", "CREATE TABLE files (path TEXT)", "INSERT INTO files VALUES ('x.py')"],
    ["UPDATE files SET snippets = '[[0, 1]]'"],
    ["UPDATE files SET snippets = '{\"not\": \"a list\"}'"],
    ["UPDATE files SET mtime_ns = 'yesterday'"],
    ["UPDATE files SET symbols = '{\"language\": 3}' WHERE symbols IS NOT NULL"],
    ["UPDATE files SET snippets = 'not json'"],
    ["UPDATE vectors SET vector = x'00'"],
    ["DROP TABLE vectors"],
])
def test_right_key_wrong_layout_is_rebuilt(workspace, tmp_path, statements, caplog):
    cache = tmp_path / "cache"
    index = _built(workspace, cache)
    _embed_all(index, 4)
    index.save()
    _tamper(index.cache_file, *statements)
    rebuilt = _open(workspace, cache)
    stats = rebuilt.build([workspace])
    assert not stats.loaded_from_cache and "rebuilding" in caplog.text
    assert _files(rebuilt) == EXPECTED
    assert _open(workspace, cache).build([workspace]).loaded_from_cache


def test_cli_index_survives_a_cache_of_another_layout(workspace, tmp_path):
    cache = tmp_path / "cache"
    index = _built(workspace, cache)
    _tamper(index.cache_file, "DROP TABLE files", "CREATE TABLE files (path TEXT, x BLOB)",
            "INSERT INTO files VALUES ('a.py', x'80')")
    done = subprocess.run([sys.executable, "-m", "aligncoder_lsp", "index", str(workspace), "--json",
                           "--cache-dir", str(cache)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"files": 11' in done.stdout and "rebuilding" in done.stderr


def test_cache_from_other_code_is_rebuilt(workspace, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    _built(workspace, cache)
    monkeypatch.setattr("aligncoder_lsp.index.workspace_index.code_fingerprint", lambda: "other code")
    caplog.set_level(logging.INFO)
    assert not _open(workspace, cache).build([workspace]).loaded_from_cache
    assert "written by other code or settings" in caplog.text


def test_cache_is_private(workspace, tmp_path):
    previous = os.umask(0o022)
    try:
        index = _built(workspace, tmp_path / "cache")
    finally:
        os.umask(previous)
    _embed_all(index, 4)
    index.save()
    assert index.cache_file.parent.stat().st_mode & 0o777 == 0o700
    assert index.cache_file.parent.parent.stat().st_mode & 0o777 == 0o700
    for file in index.cache_file.parent.iterdir():
        assert file.stat().st_mode & 0o777 == 0o600, file


def test_symlinked_cache_folder_or_file_is_refused(workspace, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache_file = WorkspaceIndex.cache_file_for(tmp_path / "cache", [workspace])
    cache_file.parent.parent.mkdir(parents=True)
    cache_file.parent.symlink_to(elsewhere)
    index = _open(workspace, tmp_path / "cache")
    assert _files(index) == set() and index.build([workspace]).files == 11
    assert list(elsewhere.iterdir()) == [] and "symbolic link" in caplog.text

    cache_file.parent.unlink()
    cache_file.parent.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cache_file.symlink_to(victim)
    caplog.clear()
    index = _open(workspace, tmp_path / "cache")
    index.build([workspace])
    index.set_file(str(workspace / "pkg" / "alpha.py"), "def changed(): pass\n")
    index.save()
    assert victim.read_text() == "keep me" and "symbolic link" in caplog.text


def test_caches_unused_for_a_long_time_are_evicted(workspace, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other"
    other.mkdir()
    old = _built(other, cache).cache_file.parent
    unknown = cache / "index" / "not-a-cache"
    unknown.mkdir()
    (unknown / "notes.txt").write_text("mine")
    stale = time.time() - 40 * 86400
    for folder in (old, unknown):
        os.utime(folder, (stale, stale))
    fresh = _built(workspace, cache).cache_file.parent
    assert not old.exists() and unknown.exists() and fresh.exists()


def test_save_writes_only_what_changed(workspace, tmp_path, monkeypatch):
    index = _built(workspace, tmp_path / "cache")
    _embed_all(index, 4)
    index.save()
    written = []
    real_write = IndexStore.write
    def write(self, changes):  # what is written, noted before the save lets go of it
        written.append((set(changes.files), len(changes.vectors), bool(changes.dead_vectors)))
        real_write(self, changes)

    monkeypatch.setattr(IndexStore, "write", write)
    index.save()
    assert written == []
    alpha = str(workspace / "pkg" / "alpha.py")
    index.set_file(alpha, "def alpha_function(x):\n    return x + 1\n\n\ndef buffer_only():\n    pass\n")
    index.remove_file(str(workspace / "Beta.java"))
    _embed_all(index, 4)
    index.save()
    ((files, vectors, dead_vectors),) = written
    assert files == {alpha, str(workspace / "Beta.java")} and vectors == 1
    assert dead_vectors  # the removed file's text
    connection = sqlite3.connect(index.cache_file)
    assert connection.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(index._key_counts)
    connection.close()
    reloaded = _open(workspace, tmp_path / "cache")
    stats = reloaded.build([workspace])
    assert stats.reindexed == 2  # the buffer's file read again from disk, and Beta.java
    assert reloaded.embedded_count == reloaded.snippet_count - 2  # their texts' vectors were pruned


def test_vectors_of_two_retrievers_never_mix(workspace, tmp_path):
    cache = tmp_path / "cache"
    index = _open(workspace, cache)
    index.use_retriever("model-a/float32/256")
    index.build([workspace])
    _embed_all(index, 4)
    assert index.embedded_count == index.snippet_count
    index.save()

    index.use_retriever("model-b/float32/256")
    assert index.embedded_count == 0 and len(index.pending_embeddings(10**6)) == len(index._key_counts)
    assert index.dense_search(np.ones(8, np.float32), 3) == []
    assert index.vectors_for([index._snippets[0]]) == [None]
    _embed_all(index, 8)  # another dimension: no mixing, no shape error
    assert len(index.dense_search(np.ones(8, np.float32), 3)) == 3
    index.save()

    again = _open(workspace, cache)
    again.use_retriever("model-b/float32/256")
    again.build([workspace])
    assert again.embedded_count == again.snippet_count
    assert again.vectors_for([again._snippets[0]])[0].shape == (8,)
    again.use_retriever("model-a/float32/256")  # evicted when the index switched to b
    assert again.embedded_count == 0


def test_stop_ends_a_build_promptly_and_keeps_what_was_done(workspace, tmp_path):
    stop = threading.Event()
    index = _open(workspace, tmp_path / "cache")
    stats = index.build([workspace], progress=lambda done, total: done == 3 and stop.set(), stop=stop)
    assert stats.stopped and stats.files == 3 and stats.removed == 0
    resumed = _open(workspace, tmp_path / "cache")
    stats = resumed.build([workspace])
    assert stats.loaded_from_cache and stats.reindexed == 8 and _files(resumed) == EXPECTED
    (workspace / "pkg" / "alpha.py").write_text("def other(): pass\n")
    assert resumed.apply_changes({workspace / "pkg" / "alpha.py"}, stop=stop) == 0


def test_oversized_buffer_is_not_indexed(workspace, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    index = WorkspaceIndex(IndexSettings(max_file_bytes=1024))
    index.build([workspace])
    alpha = str(workspace / "pkg" / "alpha.py")
    huge = "def hugeonly():\n    pass\n" + "x = 1\n" * 200
    index.set_file(alpha, huge)
    index.set_file(alpha, huge + "y = 2\n")
    assert alpha not in index._by_path and index.search("hugeonly", 3) == []
    assert caplog.text.count("larger than 1024 bytes") == 1
    index.set_file(alpha, "def smallonly():\n    pass\n")
    assert {s.path for s, _ in index.search("smallonly", 3)} == {alpha}


def test_gitignore_edit_applies_both_ways(workspace, tmp_path):
    index = _built(workspace, tmp_path / "cache")
    (workspace / ".gitignore").write_text("pkg/alpha.py\n")
    index.apply_changes({workspace})
    assert _files(index) == {"pkg/__init__.py", "Beta.java"}
    (workspace / ".gitignore").write_text("")
    index.apply_changes({workspace})
    assert _files(index) == EXPECTED


def test_status_reads_do_not_wait_for_the_index_lock(workspace, tmp_path):
    index = _built(workspace, tmp_path / "cache")
    counts = []
    with index._lock:
        reader = threading.Thread(target=lambda: counts.append(
            (index.file_count, index.snippet_count, index.embedded_count)))
        reader.start()
        reader.join(5)
        assert counts, "a status read waited for the index lock"


def test_search_completes_while_a_save_writes(workspace, tmp_path, monkeypatch):
    index = _built(workspace, tmp_path / "cache")
    writing, release = threading.Event(), threading.Event()
    real_write = IndexStore.write

    def slow_write(self, changes):
        writing.set()
        assert release.wait(10)
        real_write(self, changes)

    monkeypatch.setattr(IndexStore, "write", slow_write)
    index.set_file(str(workspace / "pkg" / "alpha.py"), "def savedlater():\n    pass\n")
    saver = threading.Thread(target=index.save)
    saver.start()
    assert writing.wait(10)
    found = []
    searcher = threading.Thread(target=lambda: found.extend(index.search("savedlater", 3)))
    searcher.start()
    searcher.join(5)
    finished_during_write = not searcher.is_alive()
    release.set()
    saver.join(10)
    searcher.join(10)
    assert finished_during_write and found
    assert _open(workspace, tmp_path / "cache").build([workspace]).loaded_from_cache


def test_store_rejects_a_file_of_another_user(tmp_path, monkeypatch):
    cache_file = tmp_path / "index" / "k" / store.FILE_NAME
    IndexStore(cache_file, "key").prepare()
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(store.CacheError, match="another user"):
        IndexStore(cache_file, "key").prepare()
