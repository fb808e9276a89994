"""Telemetry: OpenTelemetry spans for runs, steps, model calls, tools and the sandbox.

The library only creates spans (no-ops until a tracer provider is set); a
service process calls ``setup_tracing`` to export them: to OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (Jaeger takes OTLP on 4317), and always
to a local trace file that ``mesh trace`` reads.
"""

from mesh.telemetry.setup import default_trace_dir, setup_tracing
from mesh.telemetry.spans import tracer

__all__ = ["default_trace_dir", "setup_tracing", "tracer"]
