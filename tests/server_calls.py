"""Calls on a real server process that many tests make: commands, searches, waiting."""

import time

from aligncoder_lsp.evaluation.rpc import RpcPeer


def command(peer: RpcPeer, name: str, *arguments):
    """The result of ``workspace/executeCommand`` (failing the test on an error reply)."""
    response = peer.request("workspace/executeCommand", {"command": name, "arguments": list(arguments)})
    assert "result" in response, response
    return response["result"]


def search_paths(peer: RpcPeer, query: str, k: int = 10) -> set[str]:
    """The workspace-relative paths of what BM25 retrieval finds for ``query``."""
    return {hit["path"] for hit in command(peer, "aligncoder.search", query, k)}


def eventually(check, timeout: float = 30.0) -> None:
    """Wait until ``check()`` holds (the index applies changes in the background)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the server did not catch up"
        time.sleep(0.1)


def indexed(peer: RpcPeer, root, options: dict | None = None) -> None:
    """Initialize ``peer`` on the folder ``root`` and wait until its index is built."""
    peer.initialize(root.as_uri(), {"window": {"workDoneProgress": True}}, options)
    peer.wait_for("$/progress", lambda p: p["value"]["kind"] == "end", timeout=60)
