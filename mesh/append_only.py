"""Append-only JSON-lines files that stay readable after a crash at any moment.

The audit log, the tool-change log and the local trace file are written this
way. Each append writes whole lines to a file opened with ``O_APPEND``, under
an exclusive ``flock``, so writers in any thread or process never interleave
within a line, and a SIGKILL loses nothing that was appended. A power loss
can still tear the last line; the next append closes such a line off first,
so the damage is that one line, which readers skip. ``sync=True`` fsyncs
before returning, for records acknowledged to someone (a change an admin
was told is made, a run whose caller got its answer): everything appended to
the file before them becomes durable with them.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["append_lines", "read_records"]


def append_lines(path: Path, lines: Sequence[str], *, sync: bool = False) -> None:
    """Append ``lines`` (each ending in a newline) to ``path`` as one write."""
    data = "".join(lines).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer's check-then-write at a time, in any process
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # the last append was torn by a crash
        while data:  # a regular file takes it all in one write, short of a full disk
            data = data[os.write(fd, data) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)  # and with it the lock


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
