"""Dependency snippets: the current file's intra-repository imports resolved to signatures.

Python: ``import a.b [as c]``, ``from a.b import C, f``, relative imports, wildcard imports
and re-exports through ``__init__`` (or any module) are followed; Java: single-type,
wildcard and static imports, and same-package types the file mentions. Whatever resolves
outside the repository is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

from aligncoder_lsp.index.snippets import Snippet
from aligncoder_lsp.index.symbols import Definition, FileSymbols, extract

MAX_REEXPORT_DEPTH = 4
MAX_PER_MODULE = 8
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DependencyGraph:
    """Symbols of every indexed file, keyed by path relative to its workspace root."""

    def __init__(self) -> None:
        self.files: dict[str, FileSymbols] = {}
        self._python_roots: set[str] | None = None
        self._java_types: dict[str, str] | None = None

    def set_file(self, path: str, symbols: FileSymbols) -> None:
        self.files[path] = symbols
        self._invalidate()

    def remove_file(self, path: str) -> None:
        if self.files.pop(path, None) is not None:
            self._invalidate()

    def _invalidate(self) -> None:
        self._python_roots = None
        self._java_types = None

    # -- resolution ---------------------------------------------------------------------

    def dependencies(self, path: str, text: str, language: str) -> list[Snippet]:
        """Dependency snippets of the file at ``path`` (relative) with current ``text``."""
        symbols = extract(text, language)
        if language == "python":
            found = self._python(path, symbols)
        else:
            found = self._java(path, symbols, text)
        snippets, seen = [], set()
        for file, definition in found:
            key = (file, definition.name)
            if file != path and key not in seen:
                seen.add(key)
                snippets.append(Snippet(file, definition.start, definition.end, definition.signature,
                                        "dependency", definition.name))
        return snippets

    # Python

    def _python(self, path: str, symbols: FileSymbols) -> Iterator[tuple[str, Definition]]:
        for item in symbols.imports:
            module = self._python_module(path, item.module)
            if module is None:
                continue
            if item.name is None:
                yield from self._module_summary(module)
            else:
                yield from self._python_name(path, module, item.module, item.name, set(), 0)

    def _python_name(self, importer: str, module: str, dotted: str, name: str, seen: set, depth: int):
        if (module, name) in seen or depth > MAX_REEXPORT_DEPTH:
            return
        seen.add((module, name))
        symbols = self.files[module]
        if name == "*":  # public definitions and what the module re-exports
            yield from self._module_summary(module)
            for item in symbols.imports:
                if item.name is not None and not (item.alias or item.name).startswith("_"):
                    target = self._python_module(module, item.module)
                    if target is not None:
                        yield from self._python_name(module, target, item.module, item.name, seen, depth + 1)
            return
        if name in symbols.definitions:
            yield module, symbols.definitions[name]
            return
        submodule = self._python_module(importer, f"{dotted}.{name}" if not dotted.endswith(".") else dotted + name)
        if submodule is not None:
            yield from self._module_summary(submodule)
            return
        for item in symbols.imports:  # re-exported from another module
            bound = item.alias or (item.name if item.name not in (None, "*") else None)
            if bound == name or item.name == "*":
                target = self._python_module(module, item.module)
                if target is not None:
                    yield from self._python_name(module, target, item.module, item.name if bound else name, seen, depth + 1)

    def _module_summary(self, module: str):
        definitions = [d for d in self.files[module].definitions.values()
                       if not d.name.startswith("_") and d.kind != "variable"]
        for definition in definitions[:MAX_PER_MODULE]:
            yield module, definition

    def _python_module(self, importer: str, dotted: str) -> str | None:
        """Path of the module ``dotted`` (absolute, or relative to ``importer``)."""
        if dotted.startswith("."):
            level = len(dotted) - len(dotted.lstrip("."))
            base = PurePosixPath(importer).parent
            for _ in range(level - 1):
                base = base.parent
            rest = dotted[level:]
            return self._python_file(str(base / rest.replace(".", "/")) if rest else str(base))
        for root in self._source_roots():
            found = self._python_file(f"{root}/{dotted.replace('.', '/')}" if root else dotted.replace(".", "/"))
            if found:
                return found
        return None

    def _python_file(self, stem: str) -> str | None:
        stem = stem.lstrip("./") if stem not in (".", "") else ""
        for candidate in (f"{stem}.py", f"{stem}/__init__.py" if stem else "__init__.py"):
            if candidate in self.files:
                return candidate
        return None

    def _source_roots(self) -> list[str]:
        """The workspace root and the folders that hold top-level packages."""
        if self._python_roots is None:
            packages = {str(PurePosixPath(p).parent) for p in self.files if p.endswith("__init__.py")}
            roots = {""}
            for package in packages:
                parent = str(PurePosixPath(package).parent)
                if parent not in packages:
                    roots.add("" if parent == "." else parent)
            self._python_roots = roots
        return sorted(self._python_roots, key=len)

    # Java

    def _java(self, path: str, symbols: FileSymbols, text: str) -> Iterator[tuple[str, Definition]]:
        types = self._java_index()
        for item in symbols.imports:
            if item.name == "*":
                prefix = item.module + "."
                for name, file in types.items():
                    if name.startswith(prefix) and "." not in name[len(prefix):]:
                        yield from self._java_type(file, name)
                continue
            name = item.module
            if item.static and name not in types:
                name = name.rpartition(".")[0]
            if name in types:
                yield from self._java_type(types[name], name)
        mentioned = set(_IDENTIFIER.findall(text))
        prefix = symbols.package + "." if symbols.package else ""
        for name, file in types.items():
            simple = name[len(prefix):]
            if name.startswith(prefix) and "." not in simple and simple in mentioned and file != path:
                yield from self._java_type(file, name)

    def _java_type(self, file: str, qualified: str):
        definition = self.files[file].definitions.get(qualified.rpartition(".")[2])
        if definition is not None:
            yield file, definition

    def _java_index(self) -> dict[str, str]:
        """Fully qualified top-level type name -> file."""
        if self._java_types is None:
            self._java_types = {}
            for file, symbols in self.files.items():
                if symbols.language == "java":
                    prefix = symbols.package + "." if symbols.package else ""
                    for name in symbols.definitions:
                        self._java_types[prefix + name] = file
        return self._java_types
