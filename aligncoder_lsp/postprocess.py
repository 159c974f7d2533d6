"""Turn raw model output into the text inserted at the cursor.

The cursor's surroundings decide the shape of the answer:

* ``line``: code before the cursor on its line -> finish the current statement;
* ``statement``: a blank line -> the next statement (a compound one with its body);
* ``block``: the line before opens a block (``:`` / ``{``) -> the block's body.

Text that repeats what already follows the cursor is dropped, so is text where the model
starts looping, and closing brackets that would unbalance the line are cut. Nothing the
answer opens (a bracket, a string, a comment) is left open unless the code after the cursor
closes it: the answer is cut back to where it is balanced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aligncoder_lsp.balance import unclosed

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
CONTEXT_LINES = 60
"""Lines on each side of the cursor read to tell what is open there."""


@dataclass(frozen=True)
class Cursor:
    """What the post-processor needs to know about the cursor's surroundings."""

    line_before: str
    """Text of the cursor's line before the cursor."""
    line_after: str
    """Text of the cursor's line after the cursor."""
    previous_line: str
    """The nearest non-blank line above the cursor's line."""
    next_lines: tuple[str, ...]
    """A few non-blank lines after the cursor's line."""
    open_brackets: int = 0
    """Parentheses and square brackets still open at the cursor (a call spanning lines)."""
    before: str = ""
    """The last lines before the cursor (what the answer may close)."""
    after: str = ""
    """The first lines after the cursor (what may close what the answer opens)."""
    language: str = "python"

    @classmethod
    def at(cls, prefix: str, suffix: str, language: str = "python") -> Cursor:
        head, _, line_before = prefix.rpartition("\n")
        line_after, _, tail = suffix.partition("\n")
        previous = next((line for line in reversed(head.split("\n")) if line.strip()), "")
        following = tuple(line for line in tail.split("\n")[:20] if line.strip())[:3]
        recent = "\n".join(head.split("\n")[-CONTEXT_LINES:] + [line_before])
        after = "\n".join(suffix.split("\n", CONTEXT_LINES)[:CONTEXT_LINES])
        return cls(line_before, line_after, previous, following, open_brackets(recent), recent, after, language)

    @property
    def in_word(self) -> bool:
        """Whether the cursor directly follows a word character (the word may go on)."""
        return bool(re.search(r"\w$", self.line_before))

    @property
    def mode(self) -> str:
        if self.line_before.strip():
            return "line"
        if self.open_brackets:
            return "statement"
        if self.previous_line.rstrip().endswith((":", "{")):
            return "block"
        return "statement"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def open_brackets(text: str) -> int:
    """Unclosed ``(`` and ``[`` at the end of ``text`` (closers without an opener ignored)."""
    level = lowest = 0
    for index, _ in _scan(text, 0):
        if text[index] in "([":
            level += 1
        elif text[index] in ")]":
            level -= 1
            lowest = min(lowest, level)
    return level - lowest


def bracket_depth(text: str, depth: int = 0) -> int:
    """Bracket depth after ``text`` (strings and comments skipped), never below 0."""
    for _, depth in _scan(text, depth):
        pass
    return max(depth, 0)


def _scan(text: str, depth: int):
    """Yield (index, depth after the char) for every bracket outside strings/comments."""
    quote = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif char in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else char
            i += len(quote) - 1
        elif char == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif char in OPENERS:
            depth += 1
            yield i, depth
        elif char in CLOSERS:
            depth -= 1
            yield i, depth
        i += 1


def statement_end(lines: list[str], depth: int) -> int | None:
    """Number of leading ``lines`` that complete the statement open at bracket ``depth``,
    or None if they do not complete it."""
    for number, line in enumerate(lines, 1):
        depth = bracket_depth(line + "\n", depth)
        if depth == 0 and not line.rstrip().endswith(("\\", ",")):
            return number
    return None


def _opens_block(line: str) -> bool:
    return line.rstrip().endswith((":", "{"))


def _answer_length(lines: list[str], cursor: Cursor, max_lines: int) -> int | None:
    """How many of the complete ``lines`` form the answer; None while more are needed."""
    mode = cursor.mode
    if mode == "block" or (mode == "statement" and _opens_block(lines[0])):
        floor = len(cursor.line_before) + 1 if mode == "statement" else max(
            len(cursor.line_before), _indent(cursor.previous_line) + 1)
        for number, line in enumerate(lines[1:], 1):
            if line.strip() and _indent(line) < floor:
                return number
    elif (number := statement_end(lines, cursor.open_brackets)) is not None:
        return number
    return max_lines if len(lines) >= max_lines else None


def is_complete(raw: str, cursor: Cursor, max_lines: int = 8) -> bool:
    """Whether the model has produced everything :func:`finish` will keep (stop early)."""
    last_lines = raw[raw.rfind("\n", 0, raw.rfind("\n")) + 1:]  # earlier lines were checked as they grew
    if _phrase_loop(last_lines) is not None or _line_loop(raw, cursor.line_before) is not None:
        return True
    lines = _trim_leading(raw, cursor).split("\n")[:-1]
    return bool(lines) and _answer_length(lines, cursor, max_lines) is not None


def finish(raw: str, cursor: Cursor, max_lines: int = 8, truncated: bool = False) -> str:
    """The completion to insert at ``cursor`` from the model's ``raw`` continuation;
    ``truncated``: generation ended at the token limit, so its last line is unfinished."""
    start = loop_start(raw, cursor.line_before)
    lines = _trim_leading(raw if start is None else raw[:start], cursor).split("\n")
    answer = lines[: _answer_length(lines, cursor, max_lines) or max_lines]
    word_cut = truncated and start is None and len(answer) == len(lines)  # the last line may end mid-word
    if word_cut and len(answer) > 1:
        answer.pop()
        word_cut = False
    while answer and not answer[-1].strip():
        answer.pop()
    answer = _drop_repeated_suffix(answer, cursor)
    text = "\n".join(answer).rstrip()
    return _close_or_cut(_cut_unbalanced(text, cursor.open_brackets, cursor.line_after).rstrip(), cursor,
                         closable=not word_cut)


LOOP_CHARS = 24
"""A phrase repeated back to back over at least this many characters (and 4 times) is a loop."""

_PHRASE_LOOPS = [(length, re.compile(r"((?=[^\n]{0,%d}[A-Za-z])[^\n]{%d})\1{%d,}"
                                     % (length - 1, length, max(4, -(-LOOP_CHARS // length)) - 1)))
                 for length in range(1, 17)]
"""Per phrase length: a phrase with a letter in it, repeated on one line (digits, spaces and
punctuation repeat in ordinary code: ``[0, 0, 0]``, ``"----"``, indentation)."""


def loop_start(text: str, line_before: str = "") -> int | None:
    """Where ``text`` (typed after ``line_before``) starts looping, or None: after the first
    copy of a phrase repeated back to back (``_time_time_time...``) or of one to four whole
    lines repeated right after themselves. Small models fall into such loops and stay there
    until the token limit."""
    starts = [start for start in (_phrase_loop(text), _line_loop(text, line_before)) if start is not None]
    return min(starts, default=None)


def _phrase_loop(text: str) -> int | None:
    starts = [match.start() + length for length, pattern in _PHRASE_LOOPS if (match := pattern.search(text))]
    return min(starts, default=None)


def _line_loop(text: str, line_before: str) -> int | None:
    lines = (line_before + text).split("\n")[:-1]  # whole lines only
    offset = -len(line_before)
    for first, line in enumerate(lines):
        for size in range(1, 5):
            block = lines[first:first + size]
            if first + 2 * size <= len(lines) and block == lines[first + size:first + 2 * size] \
                    and re.search("[A-Za-z]", "".join(block)):
                return offset + len("\n".join(block)) + 1
        offset += len(line) + 1
    return None


def _trim_leading(raw: str, cursor: Cursor) -> str:
    """Align the model's output to the cursor: drop a space the prompt left out after code
    (it was healed away), and re-align a first line the model began on a line of its own."""
    line = cursor.line_before
    if line.strip():
        healed = line[len(line.rstrip(" \t")):]
        return raw[len(healed):] if raw.startswith(healed) else raw.lstrip(" \t")
    if raw.startswith("\n"):
        raw = raw.lstrip("\n")
        return raw[len(line):] if raw.startswith(line) else raw.lstrip(" \t")
    return raw


def _drop_repeated_suffix(lines: list[str], cursor: Cursor) -> list[str]:
    """Stop where the model starts repeating the code after the cursor."""
    if cursor.next_lines:
        following = cursor.next_lines[0].strip()
        for number, line in enumerate(lines[1:], 1):
            if line.strip() == following:
                return lines[:number]
    after = cursor.line_after.strip()
    if after and lines:
        last = lines[-1].rstrip()
        if last.endswith(after):
            lines = lines[:-1] + [last[: len(last) - len(after)]]
    return lines


def _cut_unbalanced(text: str, depth: int, line_after: str) -> str:
    """Cut before the first closing bracket that closes more than the cursor's line left
    open, less what the rest of that line closes itself."""
    closed_after = max(0, -_net_depth(line_after))
    allowed = max(0, depth - closed_after)
    for index, level in _scan(text, 0):
        if level < -allowed:
            return text[:index]
    return text


def _close_or_cut(text: str, cursor: Cursor, closable: bool = True) -> str:
    """``text`` with nothing it opens left open (unless the code after the cursor closes it).
    Brackets it opened are closed after its last line when that line ends a complete item
    (a line ending in an operator is dropped first); ``closable`` is False when the last line
    may end inside a word (cut by the token limit). Otherwise (an open string or comment) it
    is cut back: from the line where the first such opening is, or, on the first line, from
    the opening itself. Empty if the cut leaves no code."""
    cut = text
    while True:
        left_open = unclosed(cursor.before, cut, cursor.after, cursor.language) or []
        opened = [opening for opening in left_open if opening.offset >= len(cursor.before)]
        if not opened:
            return cut if cut == text or re.search(r"\w", cut) else ""
        if closable and all(opening.kind in OPENERS for opening in opened):
            if _ends_item(cut[cut.rfind("\n") + 1:], cursor.language):
                return _closed(cut, [opening.offset - len(cursor.before) for opening in opened], cursor)
            if "\n" in cut:
                cut = cut[: cut.rfind("\n")].rstrip()
                continue
        first = min(opening.offset for opening in opened) - len(cursor.before)
        line_start = cut.rfind("\n", 0, first) + 1
        cut = cut[:line_start or first].rstrip()


_CONTINUED = {
    "python": re.compile(r"(?:[-+*/%&|^~<>=!@.:\\]|\b(?:and|or|not|in|is|if|else|lambda|for|return|yield|await|"
                         r"from|import|as|with|assert|raise|del))$"),
    "java": re.compile(r"(?:[-+*/%&|^~<>=!?.:\\]|\b(?:new|return|throw|instanceof|extends|implements|case))$"),
}
"""Line ends that need more code after them: closing a bracket there would not parse."""


def _ends_item(line: str, language: str) -> bool:
    line = line.rstrip()
    return bool(line.strip()) and not (language in _CONTINUED and _CONTINUED[language].search(line))


def _closed(text: str, openers: list[int], cursor: Cursor) -> str:
    """``text`` with the brackets at ``openers`` (offsets in ``text``, outermost first) closed:
    on a line of their own at the indentation of the outermost one's line when it ends that
    line (hanging style), else at the end of ``text``. A trailing comma stays only on a line
    of its own in Python."""
    closers = "".join(OPENERS[text[offset]] for offset in reversed(openers))
    full = cursor.line_before + text
    outer = openers[0] + len(cursor.line_before)
    line_start = full.rfind("\n", 0, outer) + 1
    line_end = full.find("\n", outer)
    hanging = line_end != -1 and not full[outer + 1:line_end].strip(" \t" + "".join(OPENERS))
    if hanging:
        if cursor.language != "python":
            text = text.rstrip(",")
        return f"{text}\n{' ' * _indent(full[line_start:])}{closers}"
    return text.rstrip(",") + closers


def _net_depth(text: str) -> int:
    level = 0
    for _, level in _scan(text, 0):
        pass
    return level
