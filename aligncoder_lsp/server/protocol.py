"""JSON-RPC / LSP behaviour that pygls leaves to the server.

* a request whose params do not validate is answered with InvalidParams (pygls drops it);
* a malformed message with an id is answered with InvalidRequest, unparsable JSON with
  ParseError;
* requests after ``shutdown`` are answered with InvalidRequest (pygls drops them);
* utf-8 positions are chosen whenever the client offers them, utf-16 otherwise;
* ``exit`` records the exit code (0 after ``shutdown``, 1 otherwise) for the CLI, and
  ends a TCP server cleanly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

logger = logging.getLogger(__name__)

PREFERRED_ENCODINGS = (types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16)


@dataclass
class RejectedRequest:
    """A request that could not be turned into typed params."""

    id: Any
    method: str
    error: JsonRpcException


class AlignProtocol(LanguageServerProtocol):
    exit_code: int | None = None

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "id" in data and "method" in data:
                message = str(error.__cause__ or error)
                return RejectedRequest(data["id"], str(data["method"]), JsonRpcInvalidParams(message))
            raise

    def handle_message(self, message):
        if isinstance(message, RejectedRequest):
            logger.warning("invalid params for %s (id %s): %s", message.method, message.id, message.error)
            self._send_response(message.id, error=message.error.to_response_error())
            return
        if isinstance(message, dict):  # not JSON-RPC 2.0
            logger.warning("ignoring a message that is not JSON-RPC 2.0: %.200s", message)
            if "id" in message and "method" in message:
                error = JsonRpcInvalidRequest("not a JSON-RPC 2.0 request")
                self._send_response(message["id"], error=error.to_response_error())
            return
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT:
            if hasattr(message, "id"):
                error = JsonRpcInvalidRequest(f"{method}: the server is shutting down")
                self._send_response(message.id, error=error.to_response_error())
            return
        super().handle_message(message)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        offered = (general.position_encodings if general else None) or []
        choice = next((e for e in PREFERRED_ENCODINGS if e in offered), types.PositionEncodingKind.Utf16)
        if general is not None:
            general.position_encodings = [choice]
        return (yield from super().lsp_initialize(params))

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        self.exit_code = 0 if self._shutdown else 1
        listener = self._server._server
        if listener is None:  # stdio: pygls ends the loop by raising SystemExit
            return (yield from super().lsp_exit(*args))
        # TCP: stop listening, which ends start_tcp without an exception in a callback
        if self.writer is not None:
            self.writer.close()
        listener.close()
        return None
