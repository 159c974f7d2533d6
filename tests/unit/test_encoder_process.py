"""The retriever process: one pool however many threads ask, cancellable waits, and one
embedding space per retriever (fakes stand in for the child process and the model)."""

import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from aligncoder_lsp.config import IndexSettings, Settings
from aligncoder_lsp.index import embeddings
from aligncoder_lsp.index.embeddings import EncoderProcess, retriever_identity
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.llama_backend import Cancelled
from aligncoder_lsp.pipeline import CompletionEngine
from tests.conftest import FIXTURES


class _Pool:
    """Stands in for the ProcessPoolExecutor; slow to start, like a spawned process."""

    started = 0

    def __init__(self, *args, **kwargs):
        time.sleep(0.05)
        type(self).started += 1
        self.futures: list[Future] = []

    def submit(self, function, texts, queries=False):
        future = Future()
        if self.answer:
            future.set_result(np.ones((len(texts), 3), np.float32))
        self.futures.append(future)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.fixture
def pool(monkeypatch):
    class Pool(_Pool):
        answer = True

    monkeypatch.setattr(embeddings, "ProcessPoolExecutor", Pool)
    return Pool


def test_threads_share_one_retriever_process(pool):
    encoder = EncoderProcess()
    threads = [threading.Thread(target=encoder.encode, args=(["x"],)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert pool.started == 1


def test_a_waiting_encode_is_cancelled(pool):
    pool.answer = False  # the worker is busy with a background batch
    encoder = EncoderProcess()
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        encoder.encode(["query"], cancel=cancel)
    assert time.monotonic() - started < 5
    assert encoder._pool.futures[0].cancelled()


def test_retriever_identity_names_the_embedding_space(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, weights in ((first, b"1234"), (second, b"123456")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    assert retriever_identity(str(first), "float32", 256) == retriever_identity(str(first), "float32", 256)
    identities = {retriever_identity(str(first), "float32", 256), retriever_identity(str(second), "float32", 256),
                  retriever_identity(str(first), "bfloat16", 256), retriever_identity(str(first), "float32", 128)}
    assert len(identities) == 4


def test_changing_the_retriever_setting_switches_the_vectors(tmp_path):
    class Fake:
        def __init__(self, folder, precision, max_tokens):
            self.folder = folder

        def encode(self, texts, cancel=None, queries=False):
            return np.ones((len(texts), 3), np.float32) / np.sqrt(3)

    settings = Settings()
    index = WorkspaceIndex(IndexSettings())
    engine = CompletionEngine(settings, index, Fake)
    index.build([FIXTURES / "workspace"])
    encoder = engine.encoder()
    keys, texts = zip(*index.pending_embeddings(10**6))
    index.add_embeddings(list(keys), encoder.encode(list(texts)))
    assert index.embedded_count == index.snippet_count and engine.encoder() is encoder
    settings.retriever.model = str(tmp_path)
    assert engine.encoder() is not encoder and engine.encoder().folder == str(tmp_path)
    assert index.embedded_count == 0


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_retriever_process_ends_when_its_server_is_killed():
    """A server killed outright (SIGKILL: no shutdown, no atexit) leaves no worker behind."""
    script = ("import os, sys, time\n"
              "from aligncoder_lsp.index.embeddings import EncoderProcess\n"
              "print(EncoderProcess()._started().submit(os.getpid).result(), flush=True)\n"
              "time.sleep(60)\n")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(server.stdout.readline())
        assert not _gone(worker)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker)


def test_a_worker_whose_server_died_before_it_started_ends():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a server pid that no longer exists: the worker was left to another parent
    started = time.monotonic()
    worker = subprocess.run([sys.executable, "-c", "import sys, time\n"
                             "from aligncoder_lsp.index.embeddings import _start_worker\n"
                             f"_start_worker({gone.pid}, '', 'float32', 256, 1)\n"
                             "time.sleep(60)\nsys.exit(3)"], timeout=90)
    assert worker.returncode == 0 and time.monotonic() - started < 30
