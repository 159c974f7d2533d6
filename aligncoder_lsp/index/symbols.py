"""Imports and top-level definitions of one source file, with their signatures (tree-sitter).

The queries live in ``grammars/<language>-imports.scm`` and ``<language>-definitions.scm``;
this module turns their captures into plain records and renders each definition as a
compact signature: headers, parameters, types, decorators / annotations and the first
docstring line, bodies left out.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import cache

from tree_sitter import Language, Node, Parser, Query, QueryCursor

from aligncoder_lsp.data import shipped_folder

GRAMMARS = shipped_folder("grammars")
MAX_MEMBERS = 30
MAX_LINE = 160


@dataclass(frozen=True)
class Import:
    """``module`` as written (relative ones keep their dots); ``name`` is None for
    ``import module``, ``"*"`` for a wildcard import."""

    module: str
    name: str | None = None
    alias: str | None = None
    static: bool = False


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str
    start: int
    end: int
    signature: str


@dataclass
class FileSymbols:
    language: str
    package: str = ""
    imports: list[Import] = field(default_factory=list)
    definitions: dict[str, Definition] = field(default_factory=dict)


@cache
def _language(name: str) -> Language:
    if name == "python":
        import tree_sitter_python as grammar
    elif name == "java":
        import tree_sitter_java as grammar
    else:
        raise ValueError(f"no grammar for {name}")
    return Language(grammar.language())


@cache
def _query(language: str, kind: str) -> Query:
    return Query(_language(language), (GRAMMARS / f"{language}-{kind}.scm").read_text())


_parsers = threading.local()


def parse(text: str, language: str) -> Node:
    """Parse with this thread's parser (tree-sitter parsers are not shared across threads)."""
    parsers = _parsers.__dict__.setdefault("by_language", {})
    if language not in parsers:
        parsers[language] = Parser(_language(language))
    return parsers[language].parse(text.encode("utf-8")).root_node


def _matches(root: Node, language: str, kind: str):
    for _, captures in QueryCursor(_query(language, kind)).matches(root):
        yield {name: nodes[0] for name, nodes in captures.items()}


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None else ""


def extract(text: str, language: str) -> FileSymbols:
    """Imports and top-level definitions of a Python or Java source text."""
    root = parse(text, language)
    if language == "python":
        return FileSymbols("python", "", _python_imports(root), _definitions(root, language, _python_signature))
    package = next((_text(m["package"]) for m in _matches(root, "java", "imports") if "package" in m), "")
    return FileSymbols("java", package, _java_imports(root), _definitions(root, language, _java_signature))


def skipped_lines(text: str, language: str) -> set[int]:
    """0-based lines that are not code to complete: the inside of strings and block comments
    spanning several lines, and of imports (with their first line when the node starts it)."""
    source = text.split("\n")
    lines: set[int] = set()
    for nodes in QueryCursor(_query(language, "skipped")).captures(parse(text, language)).values():
        for node in nodes:
            (first, column), last = node.start_point, node.end_point[0]
            opens_line = first < len(source) and not source[first][:column].strip()
            lines.update(range(first if opens_line else first + 1, last + 1))
    return lines


def _definitions(root: Node, language: str, render) -> dict[str, Definition]:
    found: dict[str, Definition] = {}
    for match in _matches(root, language, "definitions"):
        (kind_capture, node), = ((k, v) for k, v in match.items() if k.startswith("definition."))
        name = _text(match["name"])
        found[name] = Definition(name, kind_capture.split(".", 1)[1], node.start_point[0],
                                 node.end_point[0] + 1, render(node))
    return found


# -- Python -------------------------------------------------------------------------------

def _python_imports(root: Node) -> list[Import]:
    imports = []
    for match in _matches(root, "python", "imports"):
        alias = _text(match.get("alias")) or None
        if "module" in match:
            imports.append(Import(_text(match["module"]), None, alias))
        else:
            name = "*" if "wildcard" in match else _text(match["name"])
            imports.append(Import(re.sub(r"\s+", "", _text(match["from"])), name, alias))
    return imports


def _python_signature(node: Node, indent: str = "") -> str:
    """Signature of a (decorated) class, function or module variable."""
    decorators: list[str] = []
    if node.type == "decorated_definition":
        decorators = [indent + _one_line(_text(d)) for d in node.named_children if d.type == "decorator"]
        node = node.child_by_field_name("definition")
    if node.type == "expression_statement":
        return indent + _one_line(_text(node))
    body = node.child_by_field_name("body")
    header = indent + _one_line(_source_between(node, body)).rstrip(":").rstrip() + ":"
    lines = decorators + [header]
    doc = _python_docstring(body)
    if doc:
        lines.append(f'{indent}    """{doc}"""')
    if node.type == "class_definition" and body is not None:
        lines.extend(_python_members(body, indent + "    "))
    elif not doc:
        lines[-1] += " ..."
    return "\n".join(lines)


def _python_members(body: Node, indent: str) -> list[str]:
    members = []
    for child in body.named_children:
        if child.type in ("function_definition", "decorated_definition", "class_definition"):
            members.append(_python_signature(child, indent))
        elif child.type == "expression_statement" and child.named_children and child.named_children[0].type == "assignment":
            members.append(indent + _one_line(_text(child)))
        if len(members) >= MAX_MEMBERS:
            members.append(indent + "...")
            break
    return members


def _python_docstring(body: Node | None) -> str:
    if body is None or not body.named_children:
        return ""
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_children and first.named_children[0].type == "string":
        content = _text(first.named_children[0]).strip("\"'rbuRBU \n")
        return next((line.strip() for line in content.split("\n") if line.strip()), "")
    return ""


# -- Java ---------------------------------------------------------------------------------

def _java_imports(root: Node) -> list[Import]:
    imports = []
    for match in _matches(root, "java", "imports"):
        if "import" not in match:
            continue
        node = match["import"]
        static = any(child.type == "static" for child in node.parent.children)
        if "wildcard" in match:
            imports.append(Import(_text(node), "*", None, static))
        elif not any(i.module == _text(node) and i.name == "*" for i in imports):
            imports.append(Import(_text(node), None, None, static))
    # a wildcard import also matches the plain pattern: keep only its wildcard form
    wildcards = {i.module for i in imports if i.name == "*"}
    return [i for i in imports if i.name == "*" or i.module not in wildcards]


def _java_signature(node: Node, indent: str = "") -> str:
    body = node.child_by_field_name("body")
    lines = [indent + _one_line(_source_between(node, body)) + " {"]
    comment = node.prev_named_sibling
    if comment is not None and comment.type == "block_comment" and _text(comment).startswith("/**"):
        first = next((line.strip(" */") for line in _text(comment).split("\n") if line.strip(" /*")), "")
        if first:
            lines.insert(0, f"{indent}/** {first} */")
    for member in body.named_children if body is not None else ():
        if member.type == "enum_body_declarations":
            lines.extend(_java_member(m, indent + "    ") for m in member.named_children)
            continue
        lines.append(_java_member(member, indent + "    "))
        if len(lines) > MAX_MEMBERS:
            lines.append(indent + "    ...")
            break
    lines.append(indent + "}")
    return "\n".join(line for line in lines if line is not None and line.strip())


def _java_member(member: Node, indent: str) -> str | None:
    kind = member.type
    if kind in ("method_declaration", "constructor_declaration"):
        body = member.child_by_field_name("body")
        return indent + _one_line(_source_between(member, body)).rstrip(";") + ";"
    if kind in ("field_declaration", "constant_declaration"):
        return indent + _one_line(_text(member))
    if kind == "enum_constant":
        return indent + _one_line(_text(member)) + ","
    if kind in ("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"):
        body = member.child_by_field_name("body")
        return indent + _one_line(_source_between(member, body)) + " { ... }"
    return None


# -- helpers ------------------------------------------------------------------------------

def _source_between(node: Node, body: Node | None) -> str:
    """The node's source up to its body (the whole node when it has none)."""
    data = node.text
    if body is not None:
        data = data[: body.start_byte - node.start_byte]
    return data.decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    line = re.sub(r"\s+", " ", text).strip()
    line = re.sub(r"\(\s+", "(", re.sub(r",\s*\)", ")", line))
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."
