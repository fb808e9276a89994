"""Turning spans on in a service process, without ever slowing a run down.

Spans go through batch processors with bounded queues and short export
timeouts, so a collector that is down costs a few dropped spans, never a
blocked run or a hung shutdown. The local trace file keeps within
``budget_bytes``, together with what earlier processes of the service left.
"""

from __future__ import annotations

import os
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mesh.paths import data_path, writable_dir
from mesh.telemetry.trace_file import MAX_TRACE_BYTES, TRACE_BACKUPS, TraceFileExporter

__all__ = ["default_trace_dir", "setup_tracing"]

EXPORT_TIMEOUT_S = 2.0
EXPORT_BATCH = 64
"""Spans per export: an export holds the interpreter while it encodes its batch, and
runs wait meanwhile; small batches keep that wait short (the p99 of a delegation)."""


def default_trace_dir() -> Path:
    return data_path("MESH_TRACE_DIR", "traces")


def setup_tracing(
    service_name: str,
    trace_dir: Path | None = None,
    *,
    budget_bytes: int = (TRACE_BACKUPS + 1) * MAX_TRACE_BYTES,
) -> TracerProvider:
    """Install a tracer provider for this process; call ``shutdown()`` on it at exit."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        timeout = float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", EXPORT_TIMEOUT_S))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(timeout=timeout), max_queue_size=4096, schedule_delay_millis=200,
            export_timeout_millis=int(timeout * 1000), max_export_batch_size=EXPORT_BATCH,
        ))  # fmt: skip
    directory = trace_dir or writable_dir(default_trace_dir(), "trace directory", "MESH_TRACE_DIR")
    provider.add_span_processor(BatchSpanProcessor(
        TraceFileExporter(directory / f"{service_name}-{os.getpid()}.jsonl",
                          max_bytes=budget_bytes // (TRACE_BACKUPS + 1), family=service_name),
        max_queue_size=4096, schedule_delay_millis=200, max_export_batch_size=EXPORT_BATCH,
    ))  # fmt: skip
    trace.set_tracer_provider(provider)
    return provider
