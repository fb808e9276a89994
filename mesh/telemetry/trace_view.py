"""Reading traces at the terminal: recent traces, and one trace as a tree."""

from __future__ import annotations

import time
from collections import defaultdict

from mesh.errors import NotFoundError
from mesh.telemetry.trace_file import SpanRecord

__all__ = ["list_traces", "render_tree"]


def list_traces(spans: list[SpanRecord], limit: int = 20) -> list[str]:
    """One line per trace, newest first: id, start, duration, root, services, errors."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    rows = []
    for trace_id, members in by_trace.items():
        root = _roots(members)[0]
        start = min(s.start_ns for s in members)
        duration_ms = (max(s.end_ns for s in members) - start) / 1e6
        services = sorted({s.service for s in members})
        errors = sum(1 for s in members if s.error)
        rows.append((start, f"{trace_id}  {time.strftime('%H:%M:%S', time.localtime(start / 1e9))}"
                            f"  {duration_ms:9.1f} ms  {root.name} [{', '.join(services)}]"
                            + (f"  {errors} error(s)" if errors else "")))  # fmt: skip
    return [line for _, line in sorted(rows, reverse=True)[:limit]]


def render_tree(spans: list[SpanRecord], trace_id: str) -> list[str]:
    """The spans of the trace whose id starts with ``trace_id``, as an indented tree."""
    ids = {s.trace_id for s in spans if s.trace_id.startswith(trace_id)}
    if len(ids) != 1:
        raise NotFoundError(f"{len(ids)} trace(s) start with {trace_id!r}; give more of the id")
    members = [s for s in spans if s.trace_id in ids]
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in members:
        children[span.parent_id].append(span)
    lines: list[str] = []

    def draw(span: SpanRecord, depth: int) -> None:
        lines.append("  " * depth + _describe(span))
        for child in sorted(children[span.span_id], key=lambda s: s.start_ns):
            draw(child, depth + 1)

    for root in _roots(members):
        draw(root, 0)
    return lines


def _roots(spans: list[SpanRecord]) -> list[SpanRecord]:
    ids = {s.span_id for s in spans}
    return sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns)


def _describe(span: SpanRecord) -> str:
    a = span.attributes
    text = f"{span.name} [{span.service}] {span.duration_ms:.1f} ms"
    if "gen_ai.usage.input_tokens" in a:
        tokens_in, tokens_out = a["gen_ai.usage.input_tokens"], a.get("gen_ai.usage.output_tokens")
        text += f", {tokens_in} in / {tokens_out or 0} out tokens"
    if "mesh.step" in a:
        text = text.replace("agent.step", f"agent.step {a['mesh.step']}", 1)
    if span.error:
        text += f"  ERROR: {span.error}"
    return text
