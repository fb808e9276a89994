"""The local trace file: finished spans as JSON lines, one file per service process.

The embedded default, so that a trace can be read with ``mesh trace`` on a
machine with no collector at all. The file rotates within a budget (a share
of the service's data limit) that also covers what earlier processes of the
service left (``RotatingFile``); a span is clipped to ``MAX_RECORD_BYTES``.
Reading streams the files: ``iter_spans`` holds one line at a time and, given
the start of a trace id, parses only that trace's lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mesh.append_only import MAX_RECORD_BYTES, json_line, parse_record, read_lines, string_field
from mesh.rotating_file import RotatingFile

__all__ = ["SpanRecord", "TraceFileExporter", "iter_spans", "read_spans"]


MAX_TRACE_BYTES = 20 * 1024 * 1024
TRACE_BACKUPS = 3


class TraceFileExporter(SpanExporter):
    """Spans as JSON lines in one file per service process, rotated: at most
    ``(backups + 1) * max_bytes`` for this process and the leftovers of its ``family``."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = MAX_TRACE_BYTES,
        backups: int = TRACE_BACKUPS,
        family: str = "",
    ) -> None:
        self.path = path
        self._file = RotatingFile(path, max_bytes=max_bytes, backups=backups, family=family)
        self._max_line = min(MAX_RECORD_BYTES, max_bytes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json_line(_record(span), self._max_line) for span in spans]
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
    """Every span recorded under ``directory``, oldest first (all in memory: for tests and
    small directories; ``iter_spans`` streams)."""
    return sorted(iter_spans(directory), key=lambda s: s.start_ns)


def iter_spans(directory: Path, trace_prefix: str = "") -> Iterator[SpanRecord]:
    """The spans recorded under ``directory`` (of the traces whose id starts with
    ``trace_prefix``), file by file, one line in memory at a time; unreadable lines are
    skipped."""
    for path in sorted(directory.glob("*.jsonl*")):  # live files and backups, in any order
        for line in read_lines(path, MAX_RECORD_BYTES):
            if trace_prefix and not _in_trace(line, trace_prefix):
                continue  # not parsed at all
            if (span := _span(line)) is not None and span.trace_id.startswith(trace_prefix):
                yield span


def _in_trace(line: bytes, trace_prefix: str) -> bool:
    trace_id = string_field(line, "trace_id")
    return trace_id is None or trace_id.startswith(trace_prefix)  # None: let parsing decide


def _span(line: bytes) -> SpanRecord | None:
    record = parse_record(line)
    try:
        span = SpanRecord(**record) if record is not None else None
    except TypeError:
        return None  # not a span: a foreign line
    if span is None or not isinstance(span.trace_id, str):
        return None
    return span if isinstance(span.start_ns, int) and isinstance(span.end_ns, int) else None
