"""The server keeps its index correct as files change on disk and in buffers, and survives
odd files and a corrupted cache."""

import os
import subprocess
import time

import pytest

from aligncoder_lsp.config import IndexSettings, RetrieverSettings
from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.index.embeddings import retriever_identity
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from tests.server_calls import command, eventually, search_paths








@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "alpha.py").write_text("def alphaonly(x):\n    return x + 1\n")
    (root / "Beta.java").write_text("class Beta { int betaonly() { return 2; } }\n")
    for number in range(8):
        (root / "pkg" / f"filler{number}.py").write_text(f"value_{number} = {number}\n")
    (root / "binary.py").write_bytes(b"\x00\x01 binary")
    (root / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    os.symlink(root, root / "pkg" / "loop")
    return root


def test_live_index_through_the_server(workspace, tmp_path):
    cache = tmp_path / "cache"
    cache_file = WorkspaceIndex.cache_file_for(cache, [workspace])
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(b"corrupted cache")
    peer = RpcPeer("--model", "/nonexistent/model.gguf", "--cache-dir", str(cache))
    try:
        peer.initialize(workspace.as_uri(), {"window": {"workDoneProgress": True}})
        peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end", timeout=60)
        status = command(peer, "aligncoder.indexStatus")
        assert status["files"] == 10
        assert search_paths(peer, "alphaonly") == {"pkg/alpha.py"}

        (workspace / "pkg" / "alpha.py").write_text("def gammaonly(y):\n    return y\n")
        eventually(lambda: search_paths(peer, "gammaonly") == {"pkg/alpha.py"})
        assert search_paths(peer, "alphaonly") == set()

        (workspace / "Beta.java").rename(workspace / "Renamed.java")
        eventually(lambda: search_paths(peer, "betaonly") == {"Renamed.java"})

        (workspace / "Renamed.java").unlink()
        eventually(lambda: search_paths(peer, "betaonly") == set())

        uri = (workspace / "pkg" / "alpha.py").as_uri()
        peer.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": "def bufferonly():\n    pass\n"}})
        eventually(lambda: search_paths(peer, "bufferonly") == {"pkg/alpha.py"})
        (workspace / "pkg" / "alpha.py").write_text("def diskonly():\n    pass\n")
        time.sleep(1.0)  # the watcher has seen the write by now; the open buffer must still win
        assert search_paths(peer, "bufferonly") == {"pkg/alpha.py"} and search_paths(peer, "diskonly") == set()
        peer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        eventually(lambda: search_paths(peer, "diskonly") == {"pkg/alpha.py"})

        eventually(lambda: (s := command(peer, "aligncoder.indexStatus"))["embedded"] == s["snippets"], 120)
        assert peer.request("shutdown")["result"] is None
        peer.notify("exit")
        assert peer.wait() == 0
    finally:
        peer.close()
    reloaded = WorkspaceIndex(IndexSettings(), cache_file)
    retriever = RetrieverSettings()
    reloaded.use_retriever(retriever_identity(retriever.model, retriever.precision, retriever.max_tokens))
    assert reloaded.build([workspace]).loaded_from_cache
    assert reloaded.embedded_count == reloaded.snippet_count


def test_the_server_indexes_what_git_lists_and_skips_pipes_and_links(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".git" / "info" / "exclude").write_text("local.py\n")
    (root / "edited.py").write_text("def linkedonly():\n    return 1\n")
    (root / "local.py").write_text("def localonly():\n    return 2\n")
    os.symlink(root / "edited.py", root / "copy.py")
    os.mkfifo(root / "pipe.py")
    for number in range(8):  # enough documents for BM25's idf to rank rare names above zero
        (root / f"filler{number}.py").write_text(f"value_{number} = {number}\n")
    peer = RpcPeer("--model", "/nonexistent/model.gguf", "--cache-dir", str(tmp_path / "cache"))
    try:
        peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}})
        peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end", timeout=60)
        assert command(peer, "aligncoder.indexStatus")["files"] == 9
        assert search_paths(peer, "linkedonly") == {"edited.py"}
        assert search_paths(peer, "localonly") == set()
        assert peer.request("shutdown")["result"] is None
        peer.notify("exit")
        assert peer.wait() == 0
    finally:
        peer.close()
