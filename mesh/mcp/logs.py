"""What an MCP server says on the side: its stderr, and the mcp SDK's own logs.

A stdio server's stderr is its log. It goes into this process's log, one
record per line under ``mesh.mcp.stderr``, prefixed with the server's name,
so that a service's operator sees why a server failed next to smolmesh's own
message about it. A pipe and a small thread carry it (the SDK hands the
child a file descriptor, so no event loop is involved); the thread ends when
the server and all its children have closed their end.

The SDK logs some failures with ``logger.exception``. smolmesh reports every
failure itself, as one clear message, so tracebacks from the SDK's loggers
are folded into one line instead (a broken third-party server must never fill
a service's log with tracebacks).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import IO, TextIO

from mesh.text import clip

__all__ = ["StderrPump", "describe", "quiet_sdk_tracebacks"]

log = logging.getLogger("mesh.mcp.stderr")

MAX_LINE_BYTES = 8_192
MAX_LINE_CHARS = 2_000
_SDK_LOGGERS = (
    "client",  # mcp.client.session logs under this bare name
    "mcp.client.client",
    "mcp.client.stdio",
    "mcp.client.streamable_http",
    "mcp.shared.dispatcher",
    "mcp.shared.jsonrpc_dispatcher",
)


class StderrPump:
    """A pipe for one server process's stderr, read into the log by a daemon thread."""

    def __init__(self, server: str) -> None:
        read_fd, write_fd = os.pipe()
        self.server = server
        self.writer: TextIO = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115
        reader = os.fdopen(read_fd, "rb")
        thread = threading.Thread(target=self._pump, args=(reader,), daemon=True,
                                  name=f"mcp-{server}-stderr")  # fmt: skip
        thread.start()

    def spawned(self) -> None:
        """Drop this process's copy of the write end (the child has its own), so that the
        reader sees end-of-file when the server exits."""
        self.writer.close()

    def _pump(self, reader: IO[bytes]) -> None:
        with reader:
            while line := reader.readline(MAX_LINE_BYTES):
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    log.info("[%s] %s", self.server, clip(text, MAX_LINE_CHARS))


def describe(err: BaseException) -> str:
    """One line for a lower-layer error: the first real cause, without its traceback."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return clip(f"{err.strerror}{where}", 300)
    text = str(err).strip()
    return clip(f"{type(err).__name__}: {text}" if text else type(err).__name__, 300, one_line=True)


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {describe(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _OneLine()


def quiet_sdk_tracebacks() -> None:
    """Fold the mcp SDK's logged tracebacks into one line each (idempotent)."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)
