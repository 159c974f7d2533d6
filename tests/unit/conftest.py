"""A small workspace on disk: a Python package, a Java class and filler modules."""

import pytest


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("from .alpha import alpha_function\n")
    (root / "pkg" / "alpha.py").write_text("def alpha_function(x):\n    return x + 1\n")
    (root / "Beta.java").write_text("class Beta { int betaMethod() { return 2; } }\n")
    for number in range(8):  # enough documents for BM25's idf to rank rare names above zero
        (root / "pkg" / f"filler{number}.py").write_text(f"value_{number} = {number}\n")
    return root
