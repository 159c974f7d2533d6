"""Odd files, checkout storms and hostile caches, through the real server process: the
server keeps answering and its index ends up equal to the disk."""

import os
import pickle

import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from tests.server_calls import command, eventually, indexed, search_paths








def _start(root, cache, *extra) -> RpcPeer:
    peer = RpcPeer("--model", "/nonexistent/model.gguf", "--cache-dir", str(cache), *extra)
    indexed(peer, root)
    return peer


def _word(number: int) -> str:
    """``number`` in letters: one BM25 token that shares no part with another number's."""
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters += chr(ord("a") + digit)
        if not number:
            return letters


def _stop(peer: RpcPeer) -> None:
    assert peer.request("shutdown")["result"] is None
    peer.notify("exit")
    assert peer.wait(10) == 0


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    for number in range(10):
        (root / "pkg" / f"good{number}.py").write_text(f"def goodname{_word(number)}():\n    return {number}\n")
    return root


def test_odd_files_are_skipped_and_the_server_goes_on(workspace, tmp_path):
    (workspace / "binary.py").write_bytes(b"\x00\x01\x02 binary")
    (workspace / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (workspace / "huge.py").write_text("x = 1\n" * 400_000)  # over index.maxFileBytes
    os.mkfifo(workspace / "pipe.py")  # opening it for reading would block forever
    os.symlink(workspace, workspace / "pkg" / "loop")
    os.symlink(workspace / "missing.py", workspace / "dangling.py")
    peer = _start(workspace, tmp_path / "cache")
    try:
        assert command(peer, "aligncoder.indexStatus")["files"] == 10
        (workspace / "pkg" / "late.py").write_text("def latename():\n    pass\n")
        eventually(lambda: search_paths(peer, "latename", 50) == {"pkg/late.py"}, timeout=60)
        _stop(peer)
    finally:
        peer.close()


def test_a_checkout_storm_leaves_the_index_equal_to_the_disk(workspace, tmp_path):
    peer = _start(workspace, tmp_path / "cache")
    try:
        files = [workspace / "pkg" / f"storm{n}.py" for n in range(200)]
        for version in range(10):  # 2,000 writes, as fast as the disk takes them
            for number, path in enumerate(files):
                path.write_text(f"def storm{_word(number)}ver{_word(version)}():\n    return {version}\n")
        for path in files[:50]:
            path.unlink()
        (workspace / "pkg" / "good0.py").rename(workspace / "pkg" / "moved.py")
        eventually(lambda: command(peer, "aligncoder.indexStatus")["files"] == 10 + 150, timeout=60)
        eventually(lambda: search_paths(peer, f"storm{_word(60)}ver{_word(9)}", 50) == {"pkg/storm60.py"}, timeout=60)
        assert all(search_paths(peer, f"storm{_word(n)}ver{_word(9)}", 50) == {f"pkg/storm{n}.py"} for n in range(50, 200, 7))
        assert all(search_paths(peer, f"storm{_word(n)}ver{_word(v)}", 50) == set() for n in range(0, 200, 13) for v in (0, 5, 8))
        assert search_paths(peer, f"goodname{_word(0)}", 50) == {"pkg/moved.py"}
        _stop(peer)
    finally:
        peer.close()


class _Planted:
    """Unpickling this object runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_cache_never_runs_code(workspace, tmp_path):
    cache = tmp_path / "cache"
    marker = tmp_path / "pwned"
    cache_file = WorkspaceIndex.cache_file_for(cache, [workspace])
    cache_file.parent.mkdir(parents=True)
    payload = pickle.dumps({"key": None, "state": _Planted(marker)})
    cache_file.write_bytes(payload)
    (cache_file.parent / "index.pkl").write_bytes(payload)
    peer = _start(workspace, cache)
    try:
        assert search_paths(peer, f"goodname{_word(3)}", 50) == {"pkg/good3.py"}
        _stop(peer)
    finally:
        peer.close()
    assert not marker.exists()


def test_an_unwritable_cache_folder_is_logged_and_the_index_still_works(workspace, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    peer = _start(workspace, blocker / "cache")
    try:
        assert search_paths(peer, f"goodname{_word(3)}", 50) == {"pkg/good3.py"}
        (workspace / "pkg" / "good3.py").write_text("def renamedname():\n    pass\n")
        eventually(lambda: search_paths(peer, "renamedname", 50) == {"pkg/good3.py"}, timeout=60)
        _stop(peer)
    finally:
        peer.close()
