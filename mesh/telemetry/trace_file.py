"""The local trace file: finished spans as JSON lines, one file per service.

The embedded default, so that a trace can be read with ``mesh trace`` on a
machine with no collector at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mesh.append_only import read_records
from mesh.rotating_file import RotatingFile, rotated_paths

__all__ = ["SpanRecord", "TraceFileExporter", "read_spans"]


MAX_TRACE_BYTES = 20 * 1024 * 1024
TRACE_BACKUPS = 3


class TraceFileExporter(SpanExporter):
    """Spans as JSON lines in one file per service process, rotated (at most about 80 MB)."""

    def __init__(
        self, path: Path, *, max_bytes: int = MAX_TRACE_BYTES, backups: int = TRACE_BACKUPS
    ) -> None:
        self.path = path
        self._file = RotatingFile(path, max_bytes=max_bytes, backups=backups)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_record(span), default=str) + "\n" for span in spans]
        try:
            self._file.append(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def _record(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    parent = span.parent
    return {
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_id": f"{parent.span_id:016x}" if parent else "",
        "name": span.name,
        "service": span.resource.attributes.get("service.name", ""),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "error": span.status.description if not span.status.is_ok else None,
        "attributes": dict(span.attributes or {}),
    }


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    error: str | None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def read_spans(directory: Path) -> list[SpanRecord]:
    """Every span recorded under ``directory``, oldest first; unreadable lines are skipped."""
    spans = []
    for current in sorted(directory.glob("*.jsonl")):
        for path in rotated_paths(current):
            spans += _spans(path)
    return sorted(spans, key=lambda s: s.start_ns)


def _spans(path: Path) -> list[SpanRecord]:
    spans = []
    for record in read_records(path):
        try:
            spans.append(SpanRecord(**record))
        except TypeError:
            continue
    return spans
