from aligncoder_lsp.index.chunker import mini_blocks, split_aggregate


def test_mini_blocks_split_at_blank_lines():
    lines = ["a", "b", "", "", "c", "", "d", "e", "f"]
    assert mini_blocks(lines) == [(0, 2), (4, 5), (6, 9)]


def test_aggregate_merges_blocks_up_to_the_bound():
    text = "\n".join(["a1", "a2", "", "b1", "", "c1", "c2", "c3"])
    snippets = split_aggregate("f.py", text, max_lines=5)
    assert [(s.start, s.end) for s in snippets] == [(0, 4), (5, 8)]
    assert snippets[0].text == "a1\na2\n\nb1"


def test_long_block_is_cut_into_bounded_pieces():
    text = "\n".join(f"x{i}" for i in range(40))
    snippets = split_aggregate("f.py", text, max_lines=15)
    assert [(s.start, s.end) for s in snippets] == [(0, 15), (15, 30), (30, 40)]
    assert all(s.end - s.start <= 15 for s in snippets)


def test_every_non_blank_line_is_covered_once():
    text = "\n".join(("" if i % 7 == 3 else f"line {i}") for i in range(100))
    snippets = split_aggregate("f.py", text, max_lines=15)
    covered = [n for s in snippets for n in range(s.start, s.end)]
    assert len(covered) == len(set(covered))
    assert {n for n in range(100) if n % 7 != 3} <= set(covered)


def test_empty_file_has_no_snippets():
    assert split_aggregate("f.py", "") == []
    assert split_aggregate("f.py", "\n\n\n") == []
