"""Open documents with the line model of LSP clients.

pygls 2.1.1 splits a document into lines with ``str.splitlines`` (``TextDocument.lines`` in
``pygls/workspace/text_document.py``), and applies incremental changes and converts
positions on those lines. ``splitlines`` also ends a line at ``\\f``, ``\\v``, ``\\x1c``-``\\x1e``,
``\\x85``, ``\\u2028`` and ``\\u2029``, where clients end lines only at ``\\n``, ``\\r\\n`` and ``\\r``:
in a file holding one of those characters every edit after it lands on the wrong line and
the buffer silently diverges from the client's. These classes split lines as LSP does.

pygls builds its ``Workspace`` inside ``LanguageServerProtocol.lsp_initialize`` and offers
no hook for the document class, so the protocol replaces it right after::

    result = yield from super().lsp_initialize(params)
    self._workspace = LspWorkspace.like(self._workspace)
    return result
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(text: str) -> tuple[str, ...]:
    """The lines of ``text`` with their line breaks, split only at \\n, \\r\\n and \\r."""
    return tuple(_LINE.findall(text))


class LspTextDocument(TextDocument):
    """A pygls document whose lines (and so every position conversion and incremental
    edit) follow the LSP line model."""

    @property
    def lines(self) -> Sequence[str]:
        return lsp_lines(self.source)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        source, lines = self.source, self.lines
        start = self._offset(source, lines, change.range.start)
        end = max(start, self._offset(source, lines, change.range.end))
        self._source = source[:start] + change.text + source[end:]

    def _offset(self, source: str, lines: Sequence[str], position: types.Position) -> int:
        """Index into ``source`` of a client position; a column past the end of its line
        means the line's end, a line past the last one the end of the text."""
        if position.line >= len(lines):
            return len(source)
        line = lines[position.line]
        content = line.rstrip("\r\n")
        units = column = 0
        while column < len(content) and units < position.character:
            units += self.position_codec.client_num_units(content[column])
            column += 1
        return sum(len(previous) for previous in lines[:position.line]) + column


class LspWorkspace(Workspace):
    """A pygls workspace that keeps its open documents as :class:`LspTextDocument`."""

    @classmethod
    def like(cls, workspace: Workspace) -> LspWorkspace:
        """A workspace with the settings of ``workspace`` (pygls' own, before any document
        was opened)."""
        return cls(workspace.root_uri, workspace._sync_kind, list(workspace.folders.values()),
                   workspace.position_encoding)

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self.position_codec)
