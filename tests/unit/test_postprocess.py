import pytest

from aligncoder_lsp.postprocess import Cursor, bracket_depth, finish, is_complete


def test_shapes_follow_the_cursor():
    assert Cursor.at("x = foo(", ")\n").mode == "line"
    assert Cursor.at("def f():\n    ", "\n").mode == "block"
    assert Cursor.at("a = 1\n", "\n").mode == "statement"


def test_a_cursor_right_after_a_word_is_in_it():
    assert Cursor.at("    if dev", "\n").in_word and Cursor.at("x = self._", "").in_word
    assert not Cursor.at("    if dev ", "\n").in_word and not Cursor.at("x = f(", "").in_word


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


def test_a_phrase_repeated_in_a_loop_is_dropped_and_stops_generation():
    cursor = Cursor.at("    elapsed = self.", "\n")
    assert is_complete("start_time_time_time_time_time", cursor)
    assert not is_complete("start_time", cursor)
    assert finish("start_time_time_time_time_time_time_time", cursor) == "start_time"


@pytest.mark.parametrize("raw, kept", [
    ("    log(x)\n    log(x)\n    log(x)\n", "    log(x)"),
    ("    a = f()\n    b = g(a)\n    a = f()\n    b = g(a)\n    a = f()\n", "    a = f()\n    b = g(a)"),
])
def test_lines_repeated_in_a_loop_are_dropped(raw, kept):
    cursor = Cursor.at("def f(x):\n", "")
    assert is_complete(raw, cursor)
    assert finish(raw, cursor) == kept


def test_a_line_loop_counts_the_line_the_cursor_is_on():
    cursor = Cursor.at("def f(x):\n    ", "\n")
    raw = "x.append(1)\n    x.append(1)\n    x.append(1)\n"
    assert is_complete(raw[:28], cursor)
    assert finish(raw, cursor) == "x.append(1)"


@pytest.mark.parametrize("line", [
    'print("-" * 40)', "grid = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", 'rule = "=============================="',
    "self.assertEqual(a, a)", "x_x = x_x_x", "a = [[1, 2], [1, 2]]"])
def test_ordinary_repetition_is_kept(line):
    assert finish(line + "\n", Cursor.at("", "\n")) == line


def test_a_truncated_last_line_is_dropped():
    cursor = Cursor.at("def f(x):\n", "")
    assert finish('    y = x + 1\n    raise ValueError("bad', cursor, truncated=True) == "    y = x + 1"
    assert finish("    y = x + 1\n    return compu", cursor, truncated=True) == "    y = x + 1"
    assert finish("    y = x + 1\n    return compu", cursor) == "    y = x + 1\n    return compu"


@pytest.mark.parametrize("line_before, raw, kept", [
    ("        ", "raise ValueError(", "raise ValueError"),
    ("        ", 'raise ValueError("negative', "raise ValueError"),
    ("    x = ", "compute_the_val", "compute_the_val"),
    ("    x = ", '"', ""),
    ("    x = ", "{", ""),
])
def test_a_truncated_single_line_is_cut_where_it_is_balanced(line_before, raw, kept):
    assert finish(raw, Cursor.at("def f(x):\n" + line_before, "\n"), truncated=True) == kept


@pytest.mark.parametrize("language, prefix, raw, suffix, kept", [
    ("python", "x = ", "foo(a, b\n", "\n", "foo(a, b)"),  # closed after a complete item
    ("python", "x = ", "foo(a +\n", "\n", "foo"),  # not after an operator
    ("python", "    ", "status = train(\n        data=loader,\n        steps=\n", "\n",
     "status = train(\n        data=loader,\n    )"),  # the line ending in an operator is dropped first
    ("python", "", "d = DatasetDict({\n    'a': a,\n    'b': b,\n", "\n", "d = DatasetDict({\n    'a': a,\n    'b': b,\n})"),
    ("python", "x = ", "foo(a, b", ")\n", "foo(a, b"),  # the rest of the line closes it
    ("python", "x = f(", "a, b\n", "\n", "a, b"),  # opened before the cursor
    ("python", 'x = "hel', 'lo"\n', "\n", 'lo"'),  # closes the string the prefix opened
    ("python", "", "s = \"it's\"\n", "\n", "s = \"it's\""),
    ("python", "", "x = 1  # don't (\n", "\n", "x = 1  # don't ("),
    ("python", "def f():\n", '    """Doc (\n    it\'s."""\n    return 1\n', "",
     '    """Doc (\n    it\'s."""\n    return 1'),
    ("python", "", 'a = 1\ndoc = """ab\n', "\n", "a = 1"),
    ("python", "", "a = 1\nb = [1,\n", "\n", "a = 1"),
    ("java", "char c = ", "'\"';\n", "\n", "'\"';"),
    ("java", "String s = ", '"a(b";\n', "\n", '"a(b";'),
    ("java", "int x = ", "/* it's */ f(\n", "\n", "/* it's */ f()"),
    ("java", "int x = ", "f(a,\n        b,\n", "\n", "f(a,\n        b)"),
    ("java", "int x = ", "f(\"it's\"", ");\n", "f(\"it's\""),
    ("java", "    ", "if (x) {\n        return 1;\n", "\n", "if (x) {\n        return 1;\n    }"),
    ("java", "    ", "run(new Task() {\n", "\n", "run(new Task() {})"),
    ("python", "    ", "x = [\n        1,\n", "\n", "x = [\n        1,\n    ]"),
    ("java", "    ", "int a = 1;\n    String s = \"abc\n", "\n", "int a = 1;"),
])
def test_nothing_the_suggestion_opens_is_left_open(language, prefix, raw, suffix, kept):
    assert finish(raw, Cursor.at(prefix, suffix, language)) == kept
