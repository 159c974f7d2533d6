from pathlib import Path

import pytest

from aligncoder_lsp.index.dependencies import DependencyGraph
from aligncoder_lsp.index.symbols import extract
from aligncoder_lsp.workspace.files import discover, language_of
from tests.conftest import FIXTURES

DEPS = FIXTURES / "deps"


def _graph(root: Path) -> DependencyGraph:
    graph = DependencyGraph()
    for path in discover(root):
        graph.set_file(path.relative_to(root).as_posix(), extract(path.read_text(), language_of(path)))
    return graph


def _deps(root: Path, relative: str) -> dict[str, str]:
    graph = _graph(root)
    text = (root / relative).read_text()
    snippets = graph.dependencies(relative, text, language_of(relative))
    assert all(s.kind == "dependency" for s in snippets)
    return {f"{s.path}:{s.text.splitlines()[0]}": s.text for s in snippets}


def test_python_imports_resolve_through_aliases_reexports_and_src_layout():
    found = _deps(DEPS / "py", "app/main.py")
    assert set(found) == {
        "src/shop/sub/rules.py:def discount(price: int, percent: float = 10.0) -> int:",
        "src/shop/cart.py:class Cart:",
        "src/shop/sub/extra.py:class Coupon:",
    }
    assert '"""Apply a percentage discount."""' in found[
        "src/shop/sub/rules.py:def discount(price: int, percent: float = 10.0) -> int:"]
    cart = found["src/shop/cart.py:class Cart:"]
    assert "def add(self, name: str, cents: int = 0) -> None: ..." in cart
    assert "self.items.append" not in cart


def test_relative_and_wildcard_imports():
    found = _deps(DEPS / "py", "src/shop/__init__.py")
    assert set(found) == {
        "src/shop/cart.py:class Cart:",
        "src/shop/sub/rules.py:def discount(price: int, percent: float = 10.0) -> int:",
    }


def test_import_cycles_terminate():
    assert _deps(DEPS / "py", "cyc/a.py") == {}
    assert _deps(DEPS / "py", "src/shop/sub/rules.py").keys() == {"src/shop/cart.py:class Cart:"}


def test_java_single_wildcard_static_and_same_package_imports():
    found = _deps(DEPS / "java", "src/main/java/com/acme/app/Main.java")
    heads = {next(line for line in text.splitlines() if not line.startswith("/**")) for text in found.values()}
    assert heads == {"public class Item {", "public interface Price {", "public final class Util {", "class Helper {"}
    item = next(text for key, text in found.items() if "Item" in key)
    assert "public String getName();" in item
    assert item.startswith("/** An item. */\npublic class Item {")
    assert "return name" not in item


def test_unparsable_text_gives_no_dependencies_and_no_error():
    graph = _graph(DEPS / "py")
    assert graph.dependencies("x.py", "def (((\n  from import", "python") == []


@pytest.mark.parametrize("language", ["python", "java"])
def test_symbols_of_empty_files(language):
    symbols = extract("", language)
    assert symbols.imports == [] and symbols.definitions == {}
