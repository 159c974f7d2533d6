"""TCP mode serves one client: further connections are refused while it is connected, a
connection that does not speak LSP is closed without running anything, and only the end of
the accepted client's connection stops the server."""

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.reliability.conftest import MISSING_MODEL, WORKSPACE


class Connection:
    def __init__(self, port: int):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.reader = self.socket.makefile("rb")

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.socket.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def call(self, msg_id: int, method: str, params=None) -> dict:
        self.send({"id": msg_id, "method": method, "params": params})
        while True:
            length = None
            while (line := self.reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert line, "the server closed the connection"
            reply = json.loads(self.reader.read(length))
            if reply.get("id") == msg_id and "method" not in reply:
                return reply

    def closed_by_server(self) -> bool:
        """True when the server closed (or reset) this connection without a reply."""
        try:
            return self.socket.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.reader.close()
        self.socket.close()


@pytest.fixture
def tcp_server(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "aligncoder_lsp", "serve", "--tcp", "--port", str(port),
                                "--model", MISSING_MODEL, "--cache-dir", str(tmp_path / "cache")],
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # a rogue probe, too
            break
        except ConnectionRefusedError:
            assert process.poll() is None and time.monotonic() < deadline, "the TCP server did not start"
            time.sleep(0.1)
    yield process, port
    process.kill()
    process.wait()


def _client(port: int) -> Connection:
    client = Connection(port)
    reply = client.call(1, "initialize", {"processId": None, "rootUri": WORKSPACE.as_uri(), "capabilities": {}})
    assert "capabilities" in reply["result"]
    client.send({"method": "initialized", "params": {}})
    return client


def _status(client: Connection, msg_id: int) -> dict:
    return client.call(msg_id, "workspace/executeCommand", {"command": "aligncoder.indexStatus"})["result"]


def test_second_connection_is_refused_while_the_first_works(tcp_server):
    process, port = tcp_server
    first = _client(port)
    second = Connection(port)
    second.send({"id": 1, "method": "shutdown"})
    assert second.closed_by_server()
    assert "roots" in _status(first, 2)  # the second client's shutdown did not run
    assert first.call(3, "shutdown")["result"] is None
    first.send({"method": "exit"})
    assert process.wait(10) == 0


def test_http_request_is_closed_without_effect(tcp_server):
    process, port = tcp_server
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
    rogue = Connection(port)
    rogue.socket.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert rogue.closed_by_server()
    rogue.close()
    assert process.poll() is None
    client = _client(port)  # a second initialize would be refused: the rogue one never ran
    assert "roots" in _status(client, 2)


def test_extra_headers_on_the_first_frame_are_refused(tcp_server):
    process, port = tcp_server
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}).encode()
    rogue = Connection(port)
    rogue.socket.sendall(b"Content-Length: %d\r\nOrigin: http://evil.example\r\n\r\n" % len(body) + body)
    assert rogue.closed_by_server()
    assert process.poll() is None
    assert "roots" in _status(_client(port), 2)


def test_rogue_connections_closing_do_not_stop_the_server(tcp_server):
    process, port = tcp_server
    Connection(port).close()  # before the client
    client = _client(port)
    rogue = Connection(port)
    assert rogue.closed_by_server()
    rogue.close()
    assert "roots" in _status(client, 2)
    assert process.poll() is None


def test_end_of_the_client_connection_stops_the_server(tcp_server):
    process, port = tcp_server
    client = _client(port)
    client.close()
    assert process.wait(10) == 1
