"""Position encodings: LSP columns in utf-8 / utf-16 / utf-32 code units <-> code points."""

from __future__ import annotations

UNIT_BYTES = {"utf-8": 1, "utf-16": 2, "utf-32": 4}


def _units(char: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(char.encode("utf-8"))
    if encoding == "utf-16":
        return 2 if ord(char) > 0xFFFF else 1
    return 1


def to_code_points(line: str, character: int, encoding: str) -> int:
    """Column in code points of ``character`` client units into ``line`` (clamped)."""
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            return index
        units += _units(char, encoding)
    return len(line)


def to_client_units(line: str, column: int, encoding: str) -> int:
    return sum(_units(char, encoding) for char in line[:column])
