"""Completion metrics as RepoCoder / CrossCodeEval define them: EM, ES, identifier F1.

T = the non-empty, stripped lines of the ground truth; P = the same for the prediction,
cut to the first |T| lines.
"""

from __future__ import annotations

import keyword
import re

from rapidfuzz.distance import Levenshtein

_IDENTIFIER = re.compile(r"[_a-zA-Z]\w*")
_STRING = re.compile(r"""('''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def _aligned(prediction: str, truth: str) -> tuple[str, str]:
    expected = _lines(truth)
    return "\n".join(_lines(prediction)[: len(expected)]), "\n".join(expected)


def exact_match(prediction: str, truth: str) -> float:
    predicted, expected = _aligned(prediction, truth)
    return float(predicted == expected)


def edit_similarity(prediction: str, truth: str) -> float:
    predicted, expected = _aligned(prediction, truth)
    if not predicted and not expected:
        return 1.0
    return 1.0 - Levenshtein.distance(predicted, expected) / max(len(predicted), len(expected))


def identifiers(text: str) -> set[str]:
    return {name for name in _IDENTIFIER.findall(_STRING.sub("", text)) if not keyword.iskeyword(name)}


def identifier_f1(prediction: str, truth: str) -> float:
    predicted, expected = (identifiers(text) for text in _aligned(prediction, truth))
    if not predicted and not expected:
        return 1.0
    common = len(predicted & expected)
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)
