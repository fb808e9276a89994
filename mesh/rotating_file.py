"""``RotatingFile``: a service's own hot log, kept within a size by rotation.

A service appends to its audit log and trace file for as long as it runs,
and callers decide how much it writes: without a bound, hostile traffic
fills the disk and pushes real records out of reach of anyone reading them.
Past ``max_bytes`` the file becomes ``NAME.1`` (``NAME.1`` becomes
``NAME.2`` and so on, the oldest beyond ``backups`` dropped), so a log never
takes more than about ``(backups + 1) * max_bytes``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from mesh.append_only import AppendOnlyFile

__all__ = ["RotatingFile", "rotated_paths"]


class RotatingFile:
    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = AppendOnlyFile(path)
        self._lock = threading.Lock()

    def append(self, lines: Sequence[str], *, sync: bool = False) -> None:
        size = sum(len(line.encode()) for line in lines)
        with self._lock:
            if self._file.size and self._file.size + size > self.max_bytes:
                self._rotate()
            self._file.append(lines, sync=sync)

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


def rotated_paths(path: Path) -> list[Path]:
    """``path`` and its rotated backups, oldest first."""
    backups = sorted(path.parent.glob(f"{path.name}.*"), key=_number, reverse=True)
    return [p for p in backups if _number(p) > 0] + ([path] if path.exists() else [])


def _number(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0
