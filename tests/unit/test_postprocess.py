import pytest

from aligncoder_lsp.postprocess import Cursor, bracket_depth, finish, is_complete


def test_shapes_follow_the_cursor():
    assert Cursor.at("x = foo(", ")\n").mode == "line"
    assert Cursor.at("def f():\n    ", "\n").mode == "block"
    assert Cursor.at("a = 1\n", "\n").mode == "statement"


def test_statement_stops_after_balanced_multiline_call():
    cursor = Cursor.at("def f(x):\n    y = 1\n    ", "\n    return y\n")
    raw = "z = foo(\n        1, 2)\n    w = 3\n"
    assert finish(raw, cursor) == "z = foo(\n        1, 2)"
    assert is_complete("z = foo(\n        1, 2)\n", cursor)
    assert not is_complete("z = foo(\n", cursor)


def test_block_body_ends_at_dedent():
    cursor = Cursor.at("def f(x):\n", "")
    assert finish("    a = 1\n    b = 2\n\ndef g():\n", cursor) == "    a = 1\n    b = 2"


def test_compound_statement_keeps_its_body():
    cursor = Cursor.at("    ", "\n")
    raw = "for i in range(3):\n        print(i)\n        x += 1\n    done()\n"
    assert finish(raw, cursor) == "for i in range(3):\n        print(i)\n        x += 1"


def test_text_repeating_the_rest_of_the_line_is_dropped():
    cursor = Cursor.at("x = foo(", ")\n")
    assert finish("a, b)\nprint(1)", cursor) == "a, b"


def test_unbalanced_closer_is_cut():
    cursor = Cursor.at("x = [1, 2", "\n")
    assert finish(", 3]])\n", cursor) == ", 3]"


def test_repeating_the_next_line_stops_the_answer():
    cursor = Cursor.at("def f():\n    ", "\n    return total\n")
    assert finish("total = 1\n    return total\n", cursor) == "total = 1"


def test_healed_space_is_not_inserted_twice():
    assert finish(" foo()\n", Cursor.at("x = ", "\n")) == "foo()"
    assert finish("z = 1\n", Cursor.at("if a:\n    ", "\n")) == "z = 1"
    assert finish("\n    z = 1\n", Cursor.at("if a:\n    ", "\n")) == "z = 1"


@pytest.mark.parametrize("text, depth", [("f(a, [b", 2), ("s = '(['", 0), ("x = f(1)  # (", 0), ('"""("""', 0)])
def test_bracket_depth_skips_strings_and_comments(text, depth):
    assert bracket_depth(text) == depth


def test_a_call_spanning_lines_may_be_closed_by_the_completion():
    cursor = Cursor.at("x = f(\n    a,\n    ", "\n")
    assert cursor.open_brackets == 1 and cursor.mode == "statement"
    assert finish("b)\ny = 2\n", cursor) == "b)"
    assert finish("b))\n", cursor) == "b)"
    assert Cursor.at("print(x))\n", "").open_brackets == 0
