"""Reading traces at the terminal: recent traces, and one trace as a tree.

Both read streams of spans and keep only what they print, so that a trace
directory of any size is read in bounded memory. The listing keeps a small
summary per trace, for at most ``2 * keep`` traces: past that, it forgets the
oldest half and from then on passes over every span that started before the
newest one forgotten (such a span's trace started earlier still, so it is no
candidate). A span that started later but whose trace was forgotten would
make a summary of part of a trace; a second pass finds such summaries (their
trace has a span that started before what they hold) and drops them. Should
that leave fewer traces than asked for, the listing starts again keeping
more: it is exact, and its memory is bounded in all but contrived cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mesh.errors import NotFoundError
from mesh.telemetry.trace_file import SpanRecord

__all__ = ["list_traces", "render_tree"]

KEEP_TRACES = 1000


@dataclass
class _Summary:
    """What a listing line says of one trace."""

    start: int
    end: int
    root: SpanRecord
    services: set[str] = field(default_factory=set)
    errors: int = 0

    @classmethod
    def of(cls, span: SpanRecord) -> _Summary:
        summary = cls(span.start_ns, span.end_ns, span)
        summary.add(span)
        return summary

    def add(self, span: SpanRecord) -> None:
        self.start = min(self.start, span.start_ns)
        self.end = max(self.end, span.end_ns)
        if _root_order(span) < _root_order(self.root):
            self.root = span
        self.services.add(span.service)
        self.errors += bool(span.error)

    def line(self, trace_id: str) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.start / 1e9))
        duration_ms = (self.end - self.start) / 1e6
        return (f"{trace_id}  {started}  {duration_ms:9.1f} ms  {self.root.name} "
                f"[{', '.join(sorted(self.services))}]"
                + (f"  {self.errors} error(s)" if self.errors else ""))  # fmt: skip


def _root_order(span: SpanRecord) -> tuple[bool, int]:
    """The root is the span with no parent (else the earliest: its parent is elsewhere)."""
    return bool(span.parent_id), span.start_ns


def list_traces(
    read: Callable[[], Iterable[SpanRecord]], limit: int = 20, *, keep: int = KEEP_TRACES
) -> list[str]:
    """One line per trace, newest first: id, start, duration, root, services, errors.
    ``read`` gives the spans afresh each time it is called (it may be called more than once)."""
    keep = max(keep, limit)
    while True:
        summaries, horizon = _summaries(read(), keep)
        if horizon is None:
            break  # nothing was forgotten: every summary is whole
        _drop_partial(summaries, read())
        if len(summaries) >= limit:
            break
        keep *= 8
    newest = sorted(summaries.items(), key=lambda item: item[1].start, reverse=True)[:limit]
    return [summary.line(trace_id) for trace_id, summary in newest]


def _summaries(spans: Iterable[SpanRecord], keep: int) -> tuple[dict[str, _Summary], int | None]:
    """A summary of each recent trace; and the start of the newest one forgotten, if any."""
    summaries: dict[str, _Summary] = {}
    horizon: int | None = None
    for span in spans:
        if horizon is not None and span.start_ns <= horizon:
            continue  # its trace started no later: too old to list
        if (summary := summaries.get(span.trace_id)) is not None:
            summary.add(span)
            continue
        summaries[span.trace_id] = _Summary.of(span)
        if len(summaries) > 2 * keep:
            newest = sorted(summaries, key=lambda t: summaries[t].start, reverse=True)
            horizon = summaries[newest[keep]].start
            for trace_id in newest[keep:]:
                del summaries[trace_id]
    return summaries, horizon


def _drop_partial(summaries: dict[str, _Summary], spans: Iterable[SpanRecord]) -> None:
    """Drop the summaries that missed a span of their trace (one that started earlier)."""
    partial = set()
    for span in spans:
        summary = summaries.get(span.trace_id)
        if summary is not None and span.start_ns < summary.start:
            partial.add(span.trace_id)
    for trace_id in partial:
        del summaries[trace_id]


def render_tree(spans: Iterable[SpanRecord], trace_id: str) -> list[str]:
    """The spans of the trace whose id starts with ``trace_id``, as an indented tree; only
    that trace's spans are kept."""
    members: list[SpanRecord] = []
    for span in spans:
        if not span.trace_id.startswith(trace_id):
            continue
        if members and span.trace_id != members[0].trace_id:
            raise NotFoundError(f"more than one trace starts with {trace_id!r}; give more of it")
        members.append(span)
    if not members:
        raise NotFoundError(f"no trace starts with {trace_id!r}")
    children: dict[str, list[SpanRecord]] = {}
    for span in members:
        children.setdefault(span.parent_id, []).append(span)
    lines: list[str] = []

    def draw(span: SpanRecord, depth: int) -> None:
        lines.append("  " * depth + _describe(span))
        for child in sorted(children.get(span.span_id, []), key=lambda s: s.start_ns):
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
