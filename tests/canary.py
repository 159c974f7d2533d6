"""A tiny benchmark repository whose ground truth and suffix carry a unique canary token.

The token occurs only after the cursor of the one task's target file, so finding it in an
index, a prompt, a trace or a cache file proves that text at or after the cursor leaked.
A model cannot invent it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

CANARY = "canary_7f3a9c2e5b1d"
REPO = "shop"
TARGET = "shop/orders.py"

_ORDERS_PREFIX = '''"""Orders placed against the shop's inventory."""

from shop.inventory import Inventory
from shop.pricing import price_with_tax


class OrderBook:
    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.orders = []

    def place(self, name: str, amount: int) -> float:
        if self.inventory.count(name) < amount:
            raise ValueError(f"not enough {name}")
        self.inventory.remove_item(name, amount)
        self.orders.append((name, amount))
        '''
_ORDERS_GROUNDTRUTH = f"self.{CANARY} = price_with_tax(amount)"
_ORDERS_SUFFIX = f'''
        return self.{CANARY}

    def {CANARY}_total(self) -> float:
        return sum(price_with_tax(amount) for _, amount in self.orders)
'''

_FILES = {
    "shop/__init__.py": "",
    "shop/inventory.py": '''"""Stock levels by item name."""


class Inventory:
    def __init__(self):
        self.items = {}

    def add_item(self, name: str, amount: int) -> None:
        self.items[name] = self.items.get(name, 0) + amount

    def remove_item(self, name: str, amount: int) -> None:
        if self.items.get(name, 0) < amount:
            raise ValueError(f"not enough {name}")
        self.items[name] -= amount

    def count(self, name: str) -> int:
        return self.items.get(name, 0)
''',
    "shop/pricing.py": '''"""Prices with tax and discounts."""

TAX_RATE = 0.2
UNIT_PRICE = 3.5


def price_with_tax(amount: int) -> float:
    return amount * UNIT_PRICE * (1 + TAX_RATE)


def discounted(price: float, percent: float) -> float:
    return price * (1 - percent / 100)
''',
    "shop/returns.py": '''"""Returned orders go back into the inventory."""

from shop.inventory import Inventory
from shop.pricing import price_with_tax


def refund(inventory: Inventory, name: str, amount: int) -> float:
    inventory.add_item(name, amount)
    return price_with_tax(amount)
''',
}


def build_repos(parent: Path) -> Path:
    """A folder of repositories holding ``shop`` (the target file in full, as a snapshot has it)."""
    repos = parent / "repos"
    for relative, text in {**_FILES, TARGET: _ORDERS_PREFIX + _ORDERS_GROUNDTRUTH + _ORDERS_SUFFIX}.items():
        path = repos / REPO / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for number in range(6):  # enough documents for BM25's idf to stay positive
        (repos / REPO / "shop" / f"filler_{number}.py").write_text(f"def filler_{number}():\n    return {number}\n")
    return repos


def task_record() -> dict:
    return {"id": "honesty/shop/0", "repo": REPO, "file_path": TARGET, "level": "line", "language": "python",
            "prefix": _ORDERS_PREFIX, "groundtruth": _ORDERS_GROUNDTRUTH, "suffix": _ORDERS_SUFFIX,
            "canary": CANARY}


def write_tasks(path: Path, record: dict | None = None) -> Path:
    path.write_text(json.dumps(record or task_record()) + "\n", encoding="utf-8")
    return path


def symlinked_tmp(parent: Path, monkeypatch) -> tuple[Path, Path]:
    """(real folder, link to it), with the link made the temporary folder of this process
    and its children, as /tmp -> /private/tmp is on macOS."""
    real = parent / "real-tmp"
    real.mkdir()
    link = parent / "tmp-link"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("TMPDIR", str(link))
    monkeypatch.setattr(tempfile, "tempdir", str(link))
    return real, link


def files_holding(folder: Path, token: str) -> list[Path]:
    """Files under ``folder`` whose bytes contain ``token``."""
    needle = token.encode()
    return [path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]
