"""Append-only JSON-lines files that stay readable after a crash at any moment.

Each append writes whole lines to a file opened with ``O_APPEND``, so
writers never interleave within a line, and a SIGKILL loses nothing that was
appended. A power loss can still tear the last line; the next writer closes
such a line off first, so the damage is that one line, which readers skip.
``sync=True`` makes the data durable before returning, for records
acknowledged to someone (a change an admin was told is made, a run whose
caller got its answer): everything appended to the file before them becomes
durable with them.

Two ways in: ``append_lines`` opens the file for each append and holds an
exclusive ``flock`` while it checks and writes, for occasional writers that
may share a file (the tool-change log of an agent's replicas);
``AppendOnlyFile`` keeps one process's own hot log open (a service's audit
log and trace file), one ``write()`` per append, checked once at opening.

Readers stream a file line by line and never hold more than one line: a line
longer than the reader's cap (an absurd one, or a file with no newlines at
all) is skipped in chunks, never loaded whole. Writers of hot logs build their
lines with ``json_line``, which clips a record to a size, so that what they
write is never skipped.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_RECORD_BYTES",
    "AppendOnlyFile",
    "append_lines",
    "in_use",
    "json_line",
    "parse_record",
    "read_lines",
    "read_records",
    "string_field",
]

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line ``read_records`` takes by default: twice the largest request a service
accepts, so that no record a request made (a tool an admin added) is ever skipped."""
MAX_RECORD_BYTES = 1024 * 1024
"""Longest line a hot log (audit log, trace file) writes, its records clipped to fit with
``json_line``, and so the longest its readers take: anything longer is not a record."""
_SKIP_CHUNK = 1024 * 1024
_STUB_STRING_CHARS = 200


def append_lines(path: Path, lines: Sequence[str], *, sync: bool = False) -> None:
    """Append ``lines`` (each ending in a newline) to ``path`` as one write."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer's check-then-write at a time, in any process
        _write_all(fd, _after_torn_line(fd) + "".join(lines).encode())
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)  # and with it the lock


class AppendOnlyFile:
    """A log only this process writes, kept open; ``size`` is tracked, for rotation.

    With ``mark_in_use``, the open file holds a shared ``flock`` for as long as this
    process has it open, so that another process can tell a live log from one left
    behind by a process that stopped (``in_use``).
    """

    def __init__(self, path: Path, *, mark_in_use: bool = False) -> None:
        self.path = path
        self.mark_in_use = mark_in_use
        self._lock = threading.Lock()
        self._fd = -1
        self.size = 0
        self.reopen()

    def append(self, lines: Sequence[str], *, sync: bool = False) -> None:
        data = "".join(lines).encode()
        with self._lock:
            _write_all(self._fd, data)
            self.size += len(data)
            if sync:
                os.fdatasync(self._fd)

    def reopen(self) -> None:
        """Open ``path`` afresh (after it was rotated away, say)."""
        with self._lock:
            fd = _open(self.path)
            if self.mark_in_use:  # before the old one closes: never a moment unmarked
                fcntl.flock(fd, fcntl.LOCK_SH)
            self._close()
            self._fd = fd
            _write_all(self._fd, _after_torn_line(self._fd))
            self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def in_use(path: Path) -> bool:
    """Whether a live process holds ``path`` open as an ``AppendOnlyFile(mark_in_use=True)``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the lock, if it was taken
    return False


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)


def _after_torn_line(fd: int) -> bytes:
    """What to write first so that the next line starts on a line of its own."""
    size = os.fstat(fd).st_size
    return b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""


def _write_all(fd: int, data: bytes) -> None:
    while data:  # a regular file takes it all in one write, short of a full disk
        data = data[os.write(fd, data) :]


def read_lines(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of ``path`` (newline included), oldest first, one in memory at a time;
    lines longer than ``max_line_bytes`` are skipped without being read whole."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    with file:
        while line := file.readline(max_line_bytes + 1):
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # the rest of it, a chunk at a time
                    line = file.readline(_SKIP_CHUNK)
                continue
            yield line


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line``; None for a torn or foreign line."""
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def string_field(line: bytes, key: str) -> str | None:
    """The first string value under ``key`` on a JSON ``line``, found without parsing the
    line: a cheap way to pass over lines a reader does not want. A hint only (it may come
    from a nested object of a foreign record): check the parsed record before trusting it."""
    match = _field(key).search(line)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@functools.cache
def _field(key: str) -> re.Pattern[bytes]:
    return re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*("(?:[^"\\]|\\.)*")')


def read_records(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    """The JSON objects in ``path``, oldest first; torn, foreign or over-long lines are
    skipped."""
    for line in read_lines(path, max_line_bytes):
        if (record := parse_record(line)) is not None:
            yield record


def json_line(record: dict[str, Any], max_bytes: int, *, ensure_ascii: bool = True) -> str:
    """``record`` as one JSON line of at most ``max_bytes`` (newline included).

    A record too long has its long strings clipped, each saying how much was cut;
    if even that does not fit, only its short scalar fields are kept. Either way
    the line still parses and still says which run (or trace) it belongs to.
    """
    line = _dumps(record, ensure_ascii)
    if len(line) <= max_bytes // 4 or len(line.encode()) <= max_bytes:  # 4: the most per char
        return line
    plain = json.loads(line)  # what default=str made of odd values is a string to clip too
    limit = max_bytes // 4
    while limit >= 64:
        line = _dumps(_clip_strings(plain, limit), ensure_ascii)
        if len(line.encode()) <= max_bytes:
            return line
        limit //= 4
    stub = {key: value for key, value in plain.items()
            if isinstance(value, int | float | bool | None)
            or (isinstance(value, str) and len(value) <= _STUB_STRING_CHARS)}  # fmt: skip
    return _dumps(stub, ensure_ascii)


def _dumps(record: Any, ensure_ascii: bool) -> str:
    return json.dumps(record, ensure_ascii=ensure_ascii, default=str) + "\n"


def _clip_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {key: _clip_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clip_strings(item, limit) for item in value[:limit]]
    return value
