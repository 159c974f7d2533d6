"""Settings from the client through the real server process: invalid values and paths a
repository could plant are refused with a warning, and the server goes on working."""

import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from tests.server_calls import command, eventually


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    for number in range(5):
        (root / "pkg" / f"module{number}.py").write_text(f"def function_{number}(x):\n    return x + {number}\n")
    return root


def test_client_cannot_move_the_cache_and_bad_values_keep_defaults(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("ALIGNCODER_LSP_CACHE", raising=False)
    planted = tmp_path / "planted"
    planted_index = WorkspaceIndex.cache_file_for(planted, [workspace])
    planted_index.parent.mkdir(parents=True)
    planted_index.write_bytes(b"a cache planted by the repository")
    log = tmp_path / "server.log"
    peer = RpcPeer("--model", "/nonexistent/model.gguf", "--log-file", str(log))
    try:
        options = {"cacheDir": str(planted), "index": {"blockLines": 0}, "retriever": {"background": False}}
        assert "result" in peer.initialize(workspace.as_uri(), options=options)
        eventually(lambda: command(peer, "aligncoder.indexStatus")["files"] == 5, timeout=30)
        assert command(peer, "aligncoder.search", "function_3", 1)[0]["path"] == "pkg/module3.py"
        warnings = [n["params"]["message"] for n in peer.notifications
                    if n["method"] == "window/logMessage" and n["params"]["type"] == 2]
        assert any("cacheDir" in message and "config.json" in message for message in warnings), warnings
        assert any("index.blockLines" in message for message in warnings), warnings
        assert peer.request("shutdown")["result"] is None
        peer.notify("exit")
        assert peer.wait() == 0
    finally:
        peer.close()
    assert planted_index.read_bytes() == b"a cache planted by the repository"
    assert str(planted) not in log.read_text()
