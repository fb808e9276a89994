"""Framed JSON messages between the host and the jailed runner: stdlib only.

Each message is a 4-byte big-endian length and that many bytes of UTF-8
JSON. This module is copied into the jail next to the runner, so it must not
import anything from smolmesh.

Host -> runner:
    {"op": "exec", "code": str, "tools": [str], "imports": [str], "max_output": int}
    {"op": "reply", "ok": true, "value": ...} | {"op": "reply", "ok": false,
                                                "error_type": str, "message": str}
Runner -> host:
    {"op": "ready"}   its first message, once its walls are up
    {"op": "call", "name": str, "args": [...], "kwargs": {...}}
    {"op": "done", "output": str, "value": str | null, "error": str | null,
     "final": bool, "answer": ...}
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = [
    "MAX_FRAME_BYTES",
    "FrameReader",
    "ProtocolError",
    "encode",
    "write_frame",
]

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 32 * 1024 * 1024


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame."""


def jsonable(value: Any) -> Any:
    """A JSON-friendly stand-in for values JSON cannot carry (sets, bytes, objects)."""
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


def encode(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, default=jsonable, ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(encode(message))
    stream.flush()


class FrameReader:
    """Reads frames from a file descriptor, with an optional deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def read(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None at end of stream; TimeoutError past ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._take()
            if message is not None:
                return message
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not _readable(self.fd, remaining):
                    raise TimeoutError
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                if self._buffer:
                    raise ProtocolError("stream ended inside a frame")
                return None
            self._buffer += chunk

    def _take(self) -> dict[str, Any] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
        end = _HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deeply
            raise ProtocolError(f"frame is not JSON: {err}") from err
        if not isinstance(message, dict) or "op" not in message:
            raise ProtocolError("frame is not a message object")
        return message


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` has data (or EOF) within ``timeout`` s. poll(), not select(): a busy
    host has descriptors past select()'s limit of 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000) + 1)))
