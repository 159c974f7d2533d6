"""JSON-RPC / LSP behaviour that pygls leaves to the server.

Every message the transport reads goes through :meth:`AlignProtocol.receive`, which answers
what pygls would drop or mishandle:

* a frame that cannot be read, a body that is not UTF-8 or not JSON → ParseError;
* anything but a JSON-RPC 2.0 request, notification or response (1.0 messages, batches,
  bad ids) → InvalidRequest, and nothing runs;
* a request before ``initialize`` → ServerNotInitialized, a notification then is dropped
  (``exit`` excepted); a second ``initialize`` → InvalidRequest, the state is kept;
* a request after ``shutdown`` → InvalidRequest;
* params that do not validate (command arguments included) → InvalidParams;
* error replies carry a short message, never a traceback (that goes to the log).

It also chooses utf-8 positions whenever the client offers them, watches the client process
named in ``initialize``, and ends the session (exit code 0 after ``shutdown``, 1 otherwise)
on ``exit``, at the end of the input or when the client process dies.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from cattrs import transform_error
from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from aligncoder_lsp.workspace.documents import LspWorkspace

logger = logging.getLogger(__name__)

PREFERRED_ENCODINGS = (types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16)
MAX_ERROR_MESSAGE = 300
PARENT_POLL_SECONDS = 2.0
"""How often the client process is checked where pidfd is not available."""


class AlignProtocol(LanguageServerProtocol):
    exit_code: int | None = None
    on_end: Callable[[int], None] | None = None
    """Called once with the exit code when the session ends (set by the transport)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.initialize_received = False

    # -- reading -----------------------------------------------------------------------

    def receive(self, body: bytes) -> None:
        """Check and dispatch the body of one frame; whatever is wrong with it is answered."""
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as error:
            self._refuse(None, JsonRpcParseError(f"the message is not valid UTF-8 (byte {error.start})"))
            return
        except (ValueError, RecursionError) as error:
            self._refuse(None, JsonRpcParseError(f"the message is not valid JSON: {error}"))
            return
        if (problem := _envelope_problem(data)) is not None:
            request_id = data.get("id") if isinstance(data, dict) and "method" in data else None
            self._refuse(request_id if _valid_id(request_id) else None, JsonRpcInvalidRequest(problem))
            return
        method, is_request = data.get("method"), "id" in data
        if method == types.EXIT and not is_request:
            self.lsp_exit()
        elif method is not None and (refusal := self._lifecycle_refusal(method, is_request)) is not None:
            if is_request:
                self._refuse(data["id"], refusal)
            else:
                logger.info("dropped notification %s: %s", method, refusal.message)
        else:
            self._dispatch(data, method, is_request)

    def reject_frame(self, reason: str) -> None:
        """A frame the transport could not read."""
        self._refuse(None, JsonRpcParseError(f"unreadable frame: {reason}"))

    def _lifecycle_refusal(self, method: str, is_request: bool) -> JsonRpcException | None:
        if not self.initialize_received and method != types.INITIALIZE:
            return JsonRpcServerNotInitialized(f"{method}: the server is not initialized yet")
        if self.initialize_received and method == types.INITIALIZE:
            return JsonRpcInvalidRequest("initialize: the server is already initialized")
        if self._shutdown:
            return JsonRpcInvalidRequest(f"{method}: the server is shutting down")
        return None

    def _dispatch(self, data: dict[str, Any], method: str | None, is_request: bool) -> None:
        try:
            message = self.structure_message(data)
        except JsonRpcException as error:
            detail = _invalid_params_detail(error)
            if method is not None and is_request:
                self._refuse(data["id"], JsonRpcInvalidParams(f"{method}: {detail}"))
            else:
                logger.warning("ignored %s: %s", method or f"a response to {data.get('id')}", detail)
            return
        if method == types.INITIALIZE:
            self.initialize_received = True
        try:
            self.handle_message(message)
        except Exception:  # pygls answers handler failures itself; this is a bug of ours
            logger.exception("failed to handle %s", method or "a response")

    # -- writing -----------------------------------------------------------------------

    def _refuse(self, msg_id: Any, error: JsonRpcException) -> None:
        logger.warning("refused a message (%d): %s", error.code, error.message)
        self._send_response(msg_id, error=error.to_response_error())

    def _send_response(self, msg_id: Any, result: Any = None, error: types.ResponseError | None = None) -> None:
        """Error replies carry a short message; tracebacks go to the log."""
        if error is not None and (isinstance(error.data, dict) or len(error.message) > MAX_ERROR_MESSAGE):
            if error.data is not None:
                logger.debug("details of the error sent for %s: %s", msg_id, error.data)
            message = error.message if len(error.message) <= MAX_ERROR_MESSAGE else error.message[:MAX_ERROR_MESSAGE - 1] + "…"
            error = types.ResponseError(code=error.code, message=message)
        super()._send_response(msg_id, result, error)

    # -- lifecycle ---------------------------------------------------------------------

    def end_session(self, reason: str) -> None:
        """The client sent ``exit``, went away or died: record the exit code, stop serving."""
        if self.exit_code is not None:
            return
        self.exit_code = 0 if self._shutdown else 1
        logger.info("%s: stopping (exit code %d)", reason, self.exit_code)
        if self.on_end is not None:
            self.on_end(self.exit_code)

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> None:
        self.end_session("the client sent exit")

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        offered = (general.position_encodings if general else None) or []
        choice = next((e for e in PREFERRED_ENCODINGS if e in offered), types.PositionEncodingKind.Utf16)
        if general is not None:
            general.position_encodings = [choice]
        self._watch_client_process(params.process_id)
        result = yield from super().lsp_initialize(params)
        self._workspace = LspWorkspace.like(self._workspace)  # lines split as clients split them
        return result

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams):
        """Arguments that do not fit the command are InvalidParams (pygls calls the command
        anyway and answers the TypeError as an internal error)."""
        handler, args, kwargs = next(super().lsp_workspace__execute_command(params))
        function = getattr(handler, "func", handler)  # the command behind pygls' server-binding wrapper
        bound = (self._server,) if function is not handler else ()
        try:
            inspect.signature(function).bind(*bound, *args, **kwargs)
        except TypeError as error:
            raise JsonRpcInvalidParams(f"{params.command}: {error}") from None
        return (yield handler, args, kwargs)

    def _watch_client_process(self, pid: int | None) -> None:
        """End the session when the client process dies (its pipes may outlive it)."""
        if pid is None or pid <= 0:
            return
        if not _process_exists(pid):
            logger.warning("client process %d is not visible here (another pid namespace?): not watching it", pid)
            return
        loop = asyncio.get_running_loop()
        try:
            handle = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._poll_client_process(pid)
            return

        def ended() -> None:
            loop.remove_reader(handle)
            os.close(handle)
            self.end_session(f"the client process {pid} ended")

        loop.add_reader(handle, ended)

    def _poll_client_process(self, pid: int) -> None:
        if _process_exists(pid):
            asyncio.get_running_loop().call_later(PARENT_POLL_SECONDS, self._poll_client_process, pid)
        else:
            self.end_session(f"the client process {pid} ended")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _envelope_problem(data: Any) -> str | None:
    """Why ``data`` is not a JSON-RPC 2.0 message LSP allows, or None."""
    if isinstance(data, list):
        return "batches are not part of LSP"
    if not isinstance(data, dict):
        return "a message must be a JSON object"
    if data.get("jsonrpc") != "2.0":
        return 'only JSON-RPC 2.0 messages ("jsonrpc": "2.0") are understood'
    if "id" in data and not _valid_id(data["id"]) and "method" in data:
        return "a request id must be an integer or a string"
    if "method" in data:
        if not isinstance(data["method"], str):
            return "method must be a string"
    elif not ("id" in data and ("result" in data) != ("error" in data)):
        return "neither a request, a notification nor a response"
    return None


def _invalid_params_detail(error: JsonRpcException) -> str:
    cause = error.__cause__
    if isinstance(cause, ClassValidationError):
        return "; ".join(transform_error(cause, path="$"))
    return str(cause or error.message)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
