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
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["AppendOnlyFile", "append_lines", "read_records"]


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
    """A log only this process writes, kept open; ``size`` is tracked, for rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
            self._close()
            self._fd = _open(self.path)
            _write_all(self._fd, _after_torn_line(self._fd))
            self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)


def _after_torn_line(fd: int) -> bytes:
    """What to write first so that the next line starts on a line of its own."""
    size = os.fstat(fd).st_size
    return b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""


def _write_all(fd: int, data: bytes) -> None:
    while data:  # a regular file takes it all in one write, short of a full disk
        data = data[os.write(fd, data) :]


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects in ``path``, oldest first; torn or foreign lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record
