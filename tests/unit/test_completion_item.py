"""The popup item built from a suggestion: what every client inserts."""

from lsprotocol import types

from aligncoder_lsp.pipeline import Completion, CompletionRequest, Trace
from aligncoder_lsp.server.features import completion_item


def _item(line: str, text: str, encoding: str = "utf-16") -> types.CompletionItem | None:
    source = f"def f(values):\n{line}\n    return total\n"
    request = CompletionRequest("/ws/app.py", source, 1, len(line))
    position = types.Position(1, len(line.encode("utf-16-le")) // 2)
    return completion_item(request, position, Completion(text, Trace()), encoding)


def test_a_multi_line_suggestion_inserts_its_first_line_and_shows_the_rest():
    item = _item("    tot", "al = 0\n    for value in values:\n        total += value")
    assert item.text_edit.new_text == "total = 0"
    assert item.filter_text == "total = 0"
    assert item.text_edit.range == types.Range(types.Position(1, 4), types.Position(1, 7))
    assert item.label == "total = 0 …"
    assert "for value in values:\n        total += value" in item.documentation.value
    assert item.insert_text_mode == types.InsertTextMode.AsIs


def test_a_single_line_suggestion_is_inserted_whole():
    item = _item("    total = sum(", "values)")
    assert item.text_edit.new_text == "values)"
    assert item.label == "values)"
    assert item.text_edit.range.start == item.text_edit.range.end


def test_the_word_being_typed_starts_in_the_client_s_units():
    item = _item("    s = '😀'; tot", "al = 1")
    assert item.text_edit.range.start.character == len("    s = '😀'; ") + 1  # the emoji is 2 UTF-16 units
    assert item.text_edit.new_text == "total = 1"


def test_a_suggestion_that_begins_on_the_next_line_has_no_popup_item():
    assert _item("    total = 0", "\n    return total") is None
