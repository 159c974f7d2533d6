"""The watch on the client process named in ``initialize``: through pidfd where the kernel
has it, by polling elsewhere; both end the session once the process is gone."""

import asyncio
import os
import subprocess
import sys

import pytest
from pygls.lsp.server import LanguageServer

from aligncoder_lsp.server import protocol as protocol_module
from aligncoder_lsp.server.protocol import AlignProtocol


@pytest.fixture(params=["pidfd", "polling"])
def watch_kind(request, monkeypatch):
    if request.param == "polling":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
        monkeypatch.setattr(protocol_module, "PARENT_POLL_SECONDS", 0.05)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this platform")
    return request.param


def test_session_ends_when_the_client_process_ends(watch_kind):
    client = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    protocol = LanguageServer("test", "0", protocol_cls=AlignProtocol).protocol
    codes: list[int] = []
    protocol.on_end = codes.append

    async def watch() -> None:
        protocol._watch_client_process(client.pid)
        await asyncio.sleep(0.2)
        assert codes == []  # alive: no end
        client.kill()
        client.wait()
        for _ in range(100):
            if codes:
                return
            await asyncio.sleep(0.05)

    try:
        asyncio.run(watch())
    finally:
        client.kill()
    assert codes == [1] and protocol.exit_code == 1
