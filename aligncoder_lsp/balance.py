"""Does a suggestion end inside a string, comment or bracket that the code after it does not close?

Accepting such a suggestion leaves the buffer broken, so the typing benchmark counts them.
Python is read with the standard tokenizer; Java with a small scanner of brackets, strings,
character literals and comments. Other languages are not checked.
"""

from __future__ import annotations

import itertools
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

OPENERS = {"(": ")", "[": "]", "{": "}"}
_QUOTE = re.compile(r"[A-Za-z]*['\"]")


@dataclass(frozen=True)
class Token:
    """A bracket (``kind`` is the character) or a string / comment running from ``start``
    to ``end`` (offsets into the text; an unterminated one ends after its line or the text)."""

    kind: str
    start: int
    end: int
    terminated: bool = True


@dataclass(frozen=True)
class Opening:
    """Something open at the end of a suggestion: a bracket character, ``string`` or ``comment``."""

    kind: str
    offset: int


def unclosed(prefix: str, suggestion: str, suffix: str, language: str) -> list[Opening] | None:
    """What is still open at the end of ``suggestion`` (inserted between ``prefix`` and
    ``suffix``) and never closed by ``suffix``, outermost first; None for an unchecked language."""
    text = prefix + suggestion + suffix
    if language == "python":
        tokens = _python_tokens(text)
    elif language == "java":
        tokens = _java_tokens(text)
    else:
        return None
    return _unclosed_at(tokens, len(prefix) + len(suggestion))


def _unclosed_at(tokens: Iterable[Token], boundary: int) -> list[Opening]:
    stack: list[Opening] = []
    tokens = iter(tokens)
    for token in tokens:
        if token.start >= boundary:
            return _left_open(stack, itertools.chain([token], tokens))
        if token.kind in ("string", "comment"):
            if not token.terminated and token.end > boundary:
                return [*stack, Opening(token.kind, token.start)]
        elif token.kind in OPENERS:
            stack.append(Opening(token.kind, token.start))
        elif stack and OPENERS[stack[-1].kind] == token.kind:
            stack.pop()
    return stack


def _left_open(stack: list[Opening], after: Iterable[Token]) -> list[Opening]:
    """The part of ``stack`` that the tokens ``after`` it leave open (a mismatched closer ends
    the search: the suffix is broken there)."""
    pending, inner = list(stack), []
    for token in after:
        if not pending:
            break
        if token.kind in ("string", "comment"):
            continue
        if token.kind in OPENERS:
            inner.append(token.kind)
        elif inner and OPENERS[inner[-1]] == token.kind:
            inner.pop()
        elif not inner and OPENERS[pending[-1].kind] == token.kind:
            pending.pop()
        else:
            break
    return pending


def _python_tokens(text: str) -> Iterator[Token]:
    """Brackets and strings from :mod:`tokenize`. Indentation is stripped before tokenizing
    (it never changes where strings and brackets are, and a half-typed buffer often has
    dedents the tokenizer rejects); offsets are mapped back to ``text``."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    starts = [0, *itertools.accumulate(len(line) for line in lines)]
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines]

    def offset(row: int, column: int) -> int:
        if row > len(lines):
            return len(text)
        return starts[row - 1] + indents[row - 1] + column

    def line_end(row: int) -> int:
        return starts[row] if row < len(lines) else len(text)

    stripped = iter(line[indent:] for line, indent in zip(lines, indents))
    skip_row = 0
    try:
        for token in tokenize.generate_tokens(lambda: next(stripped, "")):
            row, column = token.start
            if row == skip_row:
                continue
            if token.type == tokenize.OP and token.string in "()[]{}":
                yield Token(token.string, offset(row, column), offset(row, column) + 1)
            elif token.type == tokenize.STRING:
                yield Token("string", offset(row, column), offset(*token.end))
            elif token.type == tokenize.ERRORTOKEN and _QUOTE.fullmatch(token.string):
                # A quote that opens no string the tokenizer could finish: open to the line's end.
                yield Token("string", offset(row, column), line_end(row) + 1, terminated=False)
                skip_row = row
    except tokenize.TokenError as error:
        message, (row, column) = error.args
        if "string" in message:
            yield Token("string", offset(row, column), len(text) + 1, terminated=False)


def _java_tokens(text: str) -> Iterator[Token]:
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if text.startswith("//", index):
            newline = text.find("\n", index)
            index = length if newline < 0 else newline
            continue
        if text.startswith("/*", index):
            close = text.find("*/", index + 2)
            end = length + 1 if close < 0 else close + 2
            yield Token("comment", index, end, terminated=close >= 0)
            index = end
            continue
        if char in "\"'":
            token = _java_literal(text, index)
            yield token
            index = token.end
            continue
        if char in OPENERS or char in ")]}":
            yield Token(char, index, index + 1)
        index += 1


def _java_literal(text: str, start: int) -> Token:
    """A string, text block or character literal starting at ``start``."""
    block = text.startswith('"""', start)
    quote = '"""' if block else text[start]
    index = start + len(quote)
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text.startswith(quote, index):
            return Token("string", start, index + len(quote))
        elif text[index] == "\n" and not block:
            return Token("string", start, index + 1, terminated=False)
        else:
            index += 1
    return Token("string", start, len(text) + 1, terminated=False)
