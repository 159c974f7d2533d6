"""Data shipped with the package: the tree-sitter queries and the selective-retrieval policy.

They live in the top-level folders ``grammars/`` and ``weights/`` of the source tree, and the
wheel ships them inside the package (``aligncoder_lsp/grammars``, ``aligncoder_lsp/weights``;
see pyproject.toml). An installed package reads its own copy through ``importlib.resources``;
a source checkout (an editable install, or the tree on ``PYTHONPATH``) reads the folders
beside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_folder(name: str) -> Path:
    """The folder ``name`` (``grammars`` or ``weights``) of the running copy of the package."""
    packaged = resources.files(__package__) / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / name
