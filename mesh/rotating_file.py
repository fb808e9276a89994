"""``RotatingFile``: a service's own hot log, kept within a size by rotation.

A service appends to its audit log and trace file for as long as it runs,
and callers decide how much it writes: without a bound, hostile traffic
fills the disk and pushes real records out of reach of anyone reading them.
Past ``max_bytes`` the file becomes ``NAME.1`` (``NAME.1`` becomes
``NAME.2`` and so on, the oldest beyond ``backups`` dropped), so a log never
takes more than ``(backups + 1) * max_bytes``: its ``budget``. A line longer
than ``max_bytes`` is not written at all (writers clip their records with
``append_only.json_line`` first), since it could not be kept within that.

Each process writes a file of its own (``FAMILY-PID.jsonl``), so the files
of processes that stopped (a restart, a crash) would pile up beside the live
one. Given its ``family``, a rotating file counts them against its own
budget: when it opens and at each rotation, it deletes the oldest of them
until its own files (the live one counted as full) and theirs fit the budget.
A file whose process is still running is never touched: live files hold a
shared ``flock`` (``append_only.in_use``). So a directory never holds more
than one budget per live process of each family, whatever the restarts, and
after a restart the previous process's records stay readable while they fit.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mesh.append_only import AppendOnlyFile, in_use

__all__ = ["RotatingFile", "rotated_paths"]

EMPTY_LEFTOVER_S = 60.0
"""An empty file of the family this old is a leftover however small (a process that
stopped before writing); a younger one may be a process starting up, not yet marked."""


class RotatingFile:
    def __init__(self, path: Path, *, max_bytes: int, backups: int, family: str = "") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.family = family
        self.dropped = 0
        """Lines refused for being longer than ``max_bytes``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = AppendOnlyFile(path, mark_in_use=bool(family))
        self._lock = threading.Lock()
        if family:
            self._trim()

    @property
    def budget(self) -> int:
        """The most this log and the leftovers of its family take on disk."""
        return (self.backups + 1) * self.max_bytes

    def append(self, lines: Sequence[str], *, sync: bool = False) -> None:
        with self._lock:
            batch: list[str] = []
            batch_bytes = 0
            for line in lines:
                size = len(line.encode())
                if size > self.max_bytes:
                    self.dropped += 1
                    continue
                if self._file.size + batch_bytes + size > self.max_bytes:
                    if batch:
                        self._file.append(batch, sync=sync)
                        batch, batch_bytes = [], 0
                    if self._file.size:
                        self._rotate()
                batch.append(line)
                batch_bytes += size
            if batch:
                self._file.append(batch, sync=sync)

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file.reopen()
        if self.family:
            self._trim()

    def _trim(self) -> None:
        """Delete the oldest leftovers of the family until ours and theirs fit the budget."""
        ours = {self.path.with_name(f"{self.path.name}.{n}") for n in range(1, self.backups + 1)}
        member = re.compile(rf"{re.escape(self.family)}-\d+{re.escape(self.path.suffix)}(\.\d+)?")
        total = self.max_bytes  # the live file, as if already full
        leftovers: list[tuple[float, int, Path]] = []
        for path in self.path.parent.iterdir():
            if path == self.path or not member.fullmatch(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # rotated or trimmed meanwhile
            if path in ours:
                total += stat.st_size
            elif not self._live(path):  # another live process's files count in its budget
                total += stat.st_size
                leftovers.append((stat.st_mtime, stat.st_size, path))
        now = time.time()
        for mtime, size, path in sorted(leftovers):  # the oldest first
            if total > self.budget or (size == 0 and now - mtime > EMPTY_LEFTOVER_S):
                path.unlink(missing_ok=True)
                total -= size

    def _live(self, path: Path) -> bool:
        """Whether ``path`` belongs to another running process (its live file, or a backup
        of one: a process mid-rotation still holds its file, renamed to ``.1``)."""
        live = path.with_suffix("") if path.suffix[1:].isdigit() else path
        if live == self.path:
            return False  # a backup of ours beyond ``backups`` (their number was lowered)
        return in_use(live) or in_use(live.with_name(f"{live.name}.1"))


def rotated_paths(path: Path) -> list[Path]:
    """``path`` and its rotated backups, oldest first."""
    backups = sorted(path.parent.glob(f"{path.name}.*"), key=_number, reverse=True)
    return [p for p in backups if _number(p) > 0] + ([path] if path.exists() else [])


def _number(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0
