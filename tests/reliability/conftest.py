import pytest

from aligncoder_lsp.evaluation.rpc import RpcPeer
from tests.conftest import FIXTURES

WORKSPACE = FIXTURES / "workspace"
MISSING_MODEL = "/nonexistent/model.gguf"


@pytest.fixture
def server_args(tmp_path) -> list[str]:
    """A light server: no model loads, the index cache lives in the test's folder."""
    return ["--model", MISSING_MODEL, "--cache-dir", str(tmp_path / "cache")]


@pytest.fixture
def peer(server_args):
    peer = RpcPeer(*server_args)
    yield peer
    peer.close()


def index_status(peer: RpcPeer) -> dict:
    """A request every initialized server answers with a result: proof it still listens
    (and has not been shut down)."""
    response = peer.request("workspace/executeCommand", {"command": "aligncoder.indexStatus"}, timeout=20)
    assert "result" in response, response
    return response["result"]
