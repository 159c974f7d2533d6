import pytest

from aligncoder_lsp.evaluation.metrics import edit_similarity, exact_match, identifier_f1, identifiers


def test_exact_match_compares_stripped_nonblank_lines_cut_to_the_truth():
    assert exact_match("x = f(1)\n\n    y = 2\nz = 3", "x = f(1)\ny = 2") == 1.0
    assert exact_match("x = f(2)", "x = f(1)") == 0.0
    assert exact_match("", "") == 1.0


def test_edit_similarity():
    assert edit_similarity("abcd", "abce") == pytest.approx(0.75)
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("", "x") == 0.0


def test_identifier_f1_ignores_keywords_and_strings():
    assert identifiers("if x: return foo('bar baz', y)") == {"x", "foo", "y"}
    assert identifier_f1("foo(x)", "foo(y)") == pytest.approx(0.5)
    assert identifier_f1("1", "2") == 1.0
