"""Benchmarks and evaluation on third-party data."""

from __future__ import annotations

import importlib


def require_bench(*modules: str) -> None:
    """Stop a benchmark command up front, with how to install them, when dependencies of
    the ``bench`` extra are missing (the language server itself never needs them)."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SystemExit(f"error: this command needs {' and '.join(missing)}, from the bench extra: "
                         "pip install 'aligncoder-lsp[bench]' (in a checkout: ./setup.sh --test)")
