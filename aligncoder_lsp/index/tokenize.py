"""A code-aware tokenizer for BM25: identifiers whole and split on snake_case / camelCase."""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+")


def code_tokens(text: str) -> list[str]:
    """Lower-cased tokens: each identifier, then its parts when it has more than one."""
    tokens: list[str] = []
    for word in _WORD.findall(text):
        tokens.append(word.lower())
        parts = _PART.findall(word)
        if len(parts) > 1:
            tokens.extend(part.lower() for part in parts)
    return tokens
