"""A structural check of GGUF files: header, metadata, tensor infos, and that the file is long
enough for the tensor data they describe.

llama.cpp reports a truncated or corrupt file only as a failed load; this reader says what
is wrong, so ``doctor`` and the server give one clear message before llama.cpp sees the file.
It reads the layout only (no values are kept), through a memory map.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4

# Metadata value types: struct format of the scalars; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), as ggml_blck_size / ggml_type_size
# report them (tests/unit/test_model_files.py compares this table with the installed llama.cpp).
BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}


class GGUFError(ValueError):
    """The file is not a usable GGUF file; the message completes "model file PATH ..."."""


@dataclass(frozen=True)
class GGUFLayout:
    version: int
    tensors: int
    metadata_keys: int
    data_offset: int
    """Where the tensor data starts."""
    needed_bytes: int
    """The least file size that holds every tensor."""
    file_bytes: int


def read_layout(path: Path) -> GGUFLayout:
    """The layout of the GGUF file at ``path``; raises :class:`GGUFError` when it is not a
    GGUF file, is corrupt or is shorter than its tensors need, ``OSError`` when unreadable."""
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise GGUFError("is not a GGUF file")
        size = handle.seek(0, 2)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            layout = _Reader(buffer).layout()
    if layout.needed_bytes > size:
        raise GGUFError(f"is truncated: {size:,} bytes where its {layout.tensors} tensors need "
                        f"{layout.needed_bytes:,}")
    return layout


class _Reader:
    def __init__(self, buffer: mmap.mmap):
        self.buffer = buffer
        self.position = 4

    def layout(self) -> GGUFLayout:
        (version,) = self._take("<I")
        if version not in VERSIONS:
            raise GGUFError(f"is corrupt or unsupported: GGUF version {version} (llama.cpp reads 2 and 3)")
        tensors, keys = self._take("<QQ")
        self._plausible(keys, 13, "metadata entries")
        self._plausible(tensors, 24, "tensors")
        alignment = DEFAULT_ALIGNMENT
        for _ in range(keys):
            key = self._string()
            (kind,) = self._take("<I")
            if key == b"general.alignment" and kind == 4:
                (alignment,) = self._take("<I")
                if alignment == 0 or alignment & (alignment - 1):
                    raise GGUFError(f"is corrupt: alignment {alignment} is not a power of two")
            else:
                self._skip_value(kind)
        end = 0
        for _ in range(tensors):
            name = self._string()
            (dims,) = self._take("<I")
            if not 1 <= dims <= MAX_DIMS:
                raise GGUFError(f"is corrupt: tensor {name[:80]!r} has {dims} dimensions")
            shape = self._take(f"<{dims}Q")
            kind, offset = self._take("<IQ")
            if offset % alignment:
                raise GGUFError(f"is corrupt: tensor {name[:80]!r} is not aligned")
            end = max(end, offset + _tensor_bytes(shape, kind))
        data_offset = -(-self.position // alignment) * alignment
        return GGUFLayout(version, tensors, keys, data_offset, data_offset + end, len(self.buffer))

    def _take(self, layout: str) -> tuple:
        size = struct.calcsize(layout)
        if self.position + size > len(self.buffer):
            raise GGUFError(f"is truncated: it ends inside its header (byte {self.position:,})")
        values = struct.unpack_from(layout, self.buffer, self.position)
        self.position += size
        return values

    def _skip(self, size: int) -> None:
        if self.position + size > len(self.buffer):
            raise GGUFError(f"is truncated: it ends inside its header (byte {self.position:,})")
        self.position += size

    def _string(self) -> bytes:
        (length,) = self._take("<Q")
        start = self.position
        self._skip(length)
        return self.buffer[start:self.position]

    def _plausible(self, count: int, least_bytes: int, what: str) -> None:
        """A count the rest of the file cannot hold is not something to loop over."""
        if count * least_bytes > len(self.buffer) - self.position:
            raise GGUFError(f"is truncated or corrupt: its header claims {count:,} {what}, more than the file holds")

    def _skip_value(self, kind: int) -> None:
        if kind in _SCALARS:
            self._skip(struct.calcsize(_SCALARS[kind]))
        elif kind == _STRING:
            (length,) = self._take("<Q")
            self._skip(length)
        elif kind == _ARRAY:
            item, count = self._take("<IQ")
            if item in _SCALARS:
                self._skip(count * struct.calcsize(_SCALARS[item]))
            else:
                self._plausible(count, 8, "array items")
                for _ in range(count):
                    self._skip_value(item)
        else:
            raise GGUFError(f"is corrupt: unknown metadata type {kind} at byte {self.position:,}")


def _tensor_bytes(shape: tuple[int, ...], kind: int) -> int:
    """Bytes of a tensor's data; a type this table does not know counts as empty (the check
    then holds the file to a lower bound rather than rejecting a type llama.cpp may know)."""
    if kind not in BLOCKS:
        return 0
    elements_per_block, bytes_per_block = BLOCKS[kind]
    return math.prod(shape) // elements_per_block * bytes_per_block
