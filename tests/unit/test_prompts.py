from aligncoder_lsp.models.prompts import head_within, heal_trailing_space, render_context, tail_within
from aligncoder_lsp.retrieval.coarse import query_from_prefix


def words(text: str) -> int:
    return len(text.split())


def test_tail_fits_budget_and_starts_on_a_stable_line():
    text = "".join(f"w{i} w{i}\n" for i in range(100))
    window = tail_within(text, 50, words, granularity=16)
    assert words(window) <= 50
    first = int(window.split()[0][1:])
    assert first % 16 == 0
    assert window.endswith("w99 w99\n")
    # typing more at the end keeps the same start until the budget forces a move
    assert tail_within(text + "x", 50, words, granularity=16).startswith(window.split("\n")[0])


def test_tail_of_one_long_line_is_cut():
    assert words(tail_within("a " * 500, 40, words)) <= 40


def test_query_leaves_out_the_line_being_typed():
    prefix = "import os\n\n\ndef f():\n    x = 1\n    ret"
    assert query_from_prefix(prefix, 20) == "import os\ndef f():\n    x = 1"
    assert query_from_prefix(prefix, 2) == "def f():\n    x = 1"


def test_context_is_rendered_as_comments():
    block = render_context([("a.py", "def f():\n    pass")], "python")
    assert "# --- a.py\n# def f():\n#     pass\n" in block
    assert render_context([("A.java", "class A {}")], "java").startswith("// ")
    assert render_context([], "python") == ""


def test_only_spaces_after_code_are_healed():
    assert heal_trailing_space("x = ") == ("x =", " ")
    assert heal_trailing_space("def f():\n    ") == ("def f():\n    ", "")


def test_rounding_never_empties_a_short_window():
    text = "".join(f"w{i} w{i}\n" for i in range(40))
    window = tail_within(text, 6, words, granularity=16)
    assert window.strip() and words(window) <= 6


def test_head_keeps_whole_lines_within_budget():
    text = "\n".join(f"line {n}" for n in range(10))
    count = lambda t: len(t.split())
    assert head_within(text, 6, count) == "line 0\nline 1\nline 2"
    assert head_within(text, 100, count) == text
    assert head_within(text, 1, count) == ""
