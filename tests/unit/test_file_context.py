"""The current file's definitions before the code window, within their token budget."""

from aligncoder_lsp.models.prompts import FILE_HEADER, code_window
from aligncoder_lsp.retrieval.file_context import file_context

SOURCE = '''import logging

LIMIT = 10


def helper(x: int) -> int:
    """Double x."""
    return 2 * x


class Trainer:
    def __init__(self, model):
        self.device = self._infer_device()

    def _infer_device(self):
        return "cpu"

    def step(self, batch):
''' + "".join(f"        x{i} = batch[{i}]\n" for i in range(40)) + '''
    def later_method(self):
        return 1
'''


def count(text: str) -> int:
    return len(text) // 4 + 1


def _split(text: str, budget: int) -> tuple[str, str]:
    code, spaces = code_window(text, budget, count)
    return text[: len(text) - len(spaces) - len(code)], code


def test_the_enclosing_class_and_module_definitions_before_the_window_are_shown():
    prefix = SOURCE[: SOURCE.index("    def later_method")]
    before, code = _split(prefix, 60)
    assert "_infer_device" not in code
    context = file_context(before, "python", 256, count)
    assert context.block.startswith(f"# {FILE_HEADER}\n") and context.block.endswith("\n\n")
    assert "#     def _infer_device(self): ..." in context.block
    assert "# def helper(x: int) -> int:" in context.block and "# LIMIT = 10" in context.block
    assert [d.name for d in context.definitions] == ["LIMIT", "helper", "Trainer"]  # in file order


def test_nothing_from_the_window_or_after_it_is_shown():
    prefix = SOURCE[: SOURCE.index("    def later_method")]
    before, code = _split(prefix, 60)
    context = file_context(before, "python", 256, count)
    assert "later_method" not in context.block and "x39" not in context.block
    assert all(d.end <= before.count("\n") + 1 for d in context.definitions)


def test_the_budget_keeps_the_nearest_definitions():
    before, _ = _split(SOURCE[: SOURCE.index("    def later_method")], 60)
    small = file_context(before, "python", 40, count)
    assert count(small.block) <= 40
    assert [d.name for d in small.definitions][-1] == "Trainer"
    assert "helper" not in small.block  # farther, and too long for what is left


def test_no_budget_or_no_earlier_code_gives_nothing():
    before, _ = _split(SOURCE, 60)
    assert file_context(before, "python", 0, count).block == ""
    assert file_context("", "python", 256, count).block == ""
    assert file_context("\n\n", "python", 256, count).definitions == ()


def test_java_members_of_the_enclosing_class():
    source = "package p;\n\npublic class Box {\n    private int size;\n\n    public int size() {\n        return size;\n    }\n\n" \
        + "".join(f"    int f{i}() {{ return {i}; }}\n" for i in range(30))
    before, code = _split(source, 40)
    context = file_context(before, "java", 256, count)
    assert context.block.startswith(f"// {FILE_HEADER}\n")
    assert "//     public int size();" in context.block and "// public class Box {" in context.block


def test_a_broken_or_unknown_file_gives_a_block_or_nothing_but_no_error():
    assert file_context("def f(:\n  )))\nclass", "python", 256, count).block is not None
    assert file_context("whatever", "kotlin", 256, count).block == ""
