"""Open documents follow the client's line model: lines end only at \n, \r\n or \r."""

import random

from lsprotocol import types
from pygls.workspace import Workspace

from aligncoder_lsp.workspace.documents import LspWorkspace, lsp_lines

URI = "file:///ws/odd.py"
ODD = "\x0c\x0b\x1c\x1d\x1e\x85\u2028\u2029"


def _client_apply(text: str, start: tuple[int, int], end: tuple[int, int], new: str) -> str:
    """The client's model of an edit: lines split on \n only, columns in UTF-16 code units."""
    lines = text.split("\n")

    def offset(line: int, character: int) -> int:
        head = lines[line].encode("utf-16-le")[:2 * character].decode("utf-16-le")
        return sum(len(previous) + 1 for previous in lines[:line]) + len(head)

    return text[:offset(*start)] + new + text[offset(*end):]


def _change(start: tuple[int, int], end: tuple[int, int], new: str) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(*start), types.Position(*end)), text=new)


def _open(workspace, text: str) -> None:
    workspace.put_text_document(types.TextDocumentItem(uri=URI, language_id="python", version=1, text=text))


def _edit(workspace, start, end, new) -> None:
    workspace.update_text_document(types.VersionedTextDocumentIdentifier(uri=URI, version=2), _change(start, end, new))


def test_edits_after_odd_separators_land_where_the_client_put_them():
    text = "a = '\x0c'\nb = '\x85' + '\u2028'\nc = 3\n"
    workspace = LspWorkspace(None)
    _open(workspace, text)
    for start, end, new in [((2, 4), (2, 5), "4"), ((1, 10), (1, 10), "x"), ((0, 0), (0, 1), "alpha")]:
        text = _client_apply(text, start, end, new)
        _edit(workspace, start, end, new)
        assert workspace.get_text_document(URI).source == text


def test_random_edits_keep_the_buffer_equal_to_the_client_model():
    generator = random.Random(8)
    alphabet = "ab \n😀é" + ODD
    text = "".join(generator.choice(alphabet) for _ in range(300))
    workspace = LspWorkspace(None)
    _open(workspace, text)
    for _ in range(300):
        lines = text.split("\n")
        positions = sorted((line, generator.randint(0, len(lines[line].encode("utf-16-le")) // 2))
                           for line in (generator.randrange(len(lines)) for _ in range(2)))
        positions = [(line, column - _splits_pair(lines[line], column)) for line, column in positions]
        new = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 4)))
        text = _client_apply(text, positions[0], positions[1], new)
        _edit(workspace, positions[0], positions[1], new)
        assert workspace.get_text_document(URI).source == text


def _splits_pair(line: str, column: int) -> bool:
    """Whether UTF-16 column ``column`` falls inside a surrogate pair (clients never send one)."""
    units = line.encode("utf-16-le")
    return column * 2 < len(units) and 0xDC00 <= int.from_bytes(units[2 * column:2 * column + 2], "little") <= 0xDFFF


def test_lines_end_only_at_lsp_line_breaks():
    assert lsp_lines("a\x0cb\r\nc\rd\ne\u2028f") == ("a\x0cb\r\n", "c\r", "d\n", "e\u2028f")
    assert lsp_lines("") == ()
    assert lsp_lines("x\n") == ("x\n",)


def test_a_workspace_like_pygls_own_keeps_its_settings():
    folder = types.WorkspaceFolder(uri="file:///ws", name="ws")
    workspace = LspWorkspace.like(Workspace("file:///ws", types.TextDocumentSyncKind.Incremental, [folder],
                                            types.PositionEncodingKind.Utf8))
    assert workspace.root_uri == "file:///ws" and list(workspace.folders.values()) == [folder]
    _open(workspace, "é\x85x\n")
    _edit(workspace, (0, 4), (0, 5), "y")  # UTF-8: é and \x85 take 2 units each
    assert workspace.get_text_document(URI).source == "é\x85y\n"
