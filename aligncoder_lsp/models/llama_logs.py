"""llama.cpp's own log lines, routed into Python logging at their true level.

llama-cpp-python prints them to stderr through a table of ggml levels that predates ggml's
DEBUG level, so a WARN (such as "using full-size SWA cache" at every model load) arrives as
an error, and editors show a server's stderr as errors. Here llama.cpp's errors stay errors,
its warnings are progress worth a ``-v`` (they describe its configuration, nothing the user
must act on) and the rest is debug output.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.ERROR}
_CONTINUE = 5
_state = {"callback": None, "level": logging.DEBUG}


def route_llama_logs() -> None:
    """Send llama.cpp's log lines to this module's logger (once per process)."""
    if _state["callback"] is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _CONTINUE:
            _state["level"] = _LEVELS.get(level, logging.DEBUG)
        message = text.decode("utf-8", errors="replace").rstrip("\n")
        if message:
            logger.log(_state["level"], "%s", message)

    _state["callback"] = forward  # ctypes calls it for the life of the process: keep it alive
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
