"""Hot logs stay within their size: the audit log and the trace file rotate, keep a fixed
number of backups, and readers still see the newest records in order."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from mesh.append_only import read_records
from mesh.rotating_file import RotatingFile, rotated_paths
from mesh.telemetry.trace_file import TraceFileExporter, read_spans


def test_a_file_rotates_keeping_its_backups_and_its_order(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "a.jsonl", max_bytes=1000, backups=2)
    for n in range(100):
        log.append([json.dumps({"n": n, "pad": "x" * 80}) + "\n"])
    log.close()
    files = rotated_paths(tmp_path / "a.jsonl")
    assert [f.name for f in files] == ["a.jsonl.2", "a.jsonl.1", "a.jsonl"]
    assert all(f.stat().st_size <= 1000 for f in files)
    numbers = [r["n"] for f in files for r in read_records(f)]
    assert numbers == list(range(numbers[0], 100))  # the newest records, in order


def test_the_trace_file_stays_within_its_bound(tmp_path: Path) -> None:
    exporter = TraceFileExporter(tmp_path / "svc.jsonl", max_bytes=20_000, backups=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for n in range(2000):  # about 400 kB of spans without rotation
        with tracer.start_as_current_span(f"span-{n}") as span:
            span.set_attribute("pad", "y" * 100)
    provider.shutdown()
    total = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert total <= 2 * 20_000
    names = [s.name for s in read_spans(tmp_path)]
    assert names[-1] == "span-1999" and "span-0" not in names


def test_a_batch_larger_than_a_file_is_split_across_files_in_order(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "a.jsonl", max_bytes=1000, backups=5)
    log.append([json.dumps({"n": n, "pad": "x" * 80}) + "\n" for n in range(30)])  # ~3 kB
    log.close()
    files = rotated_paths(tmp_path / "a.jsonl")
    assert len(files) == 4 and all(f.stat().st_size <= 1000 for f in files)
    assert [r["n"] for f in files for r in read_records(f)] == list(range(30))


def test_a_span_too_long_for_a_line_is_clipped_not_lost(tmp_path: Path) -> None:
    exporter = TraceFileExporter(tmp_path / "svc.jsonl", max_bytes=50_000, backups=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("huge") as span:
        span.set_attribute("gen_ai.input.messages", "m" * 200_000)
    provider.shutdown()
    assert (tmp_path / "svc.jsonl").stat().st_size <= 50_000
    (kept,) = read_spans(tmp_path)
    text = kept.attributes["gen_ai.input.messages"]
    assert kept.name == "huge" and text.endswith("more characters]") and len(text) < 50_000
