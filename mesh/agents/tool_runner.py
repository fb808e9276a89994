"""Running the tool calls of one step: lookup, validation, events, records.

Both agent kinds and the code executors' bridge go through here, so every
call, however it was written, is validated the same way, recorded in the
step's memory, reported as events, and turned into an error the model can
read instead of an exception that ends the run.

It is also where an untrusted tool's result is fenced (``mesh.tools.untrusted``):
its record's ``observation``, which is what a tool-calling model reads, is the
fenced text, while the code of a code agent, ``CallTool`` callers and
``run_parallel`` get the value itself, to compute with, and events report the
tool's own text (people and audits read those). What a code step prints is
the code agent's to fence (``untrusted_called`` says when).

An ``Image`` a tool returns is kept on the step (``ActionStep.keep_image``, bounded)
and shown to the model at the next step; everyone else, the code included, gets a
short text that stands for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mesh.agents.context import RunContext
from mesh.agents.events import ToolCallFinished, ToolCallStarted
from mesh.agents.fan_out import ParallelCallsTool
from mesh.agents.memory import ActionStep, ToolCallRecord
from mesh.errors import MeshError, RunCancelledError, ToolExecutionError, ToolNotFoundError
from mesh.models.images import Image
from mesh.run_scope import current_scope
from mesh.telemetry.spans import record_error, tool_span
from mesh.text import clip
from mesh.tools.base import Tool
from mesh.tools.schema import bind_arguments
from mesh.tools.untrusted import fence

__all__ = ["ToolRunner", "UntrustedCallRecord", "call_directly"]

MAX_EVENT_RESULT_CHARS = 4000


class UntrustedCallRecord(ToolCallRecord):
    """A call of an untrusted tool: what it returned, or the error it ran into (which may
    quote its server), reads fenced. ``result`` stays the value itself."""

    @property
    def observation(self) -> str:
        text = self.unfenced
        return str(fence(text, self.name)) if self.from_tool else text  # plain text from here

    @property
    def unfenced(self) -> str:
        """The observation as the tool gave it: what events report (people and audits read
        them; what the model read is in its next prompt)."""
        return super().observation

    @property
    def from_tool(self) -> bool:
        """Whether the observation holds the tool's text: it returned, or failed running
        (not a call refused before it ran, whose error is ours)."""
        return self.error is None or isinstance(self.exception, ToolExecutionError)


class ToolRunner:
    """The tools of one step; also the ``ToolBridge`` code executors call back into."""

    def __init__(self, ctx: RunContext, step: ActionStep, toolbox: Mapping[str, Tool]) -> None:
        self.ctx = ctx
        self.step = step
        self.toolbox = dict(toolbox)  # a snapshot: agent.tools changes apply next step
        self._calls = 0
        self._images_lock = threading.Lock()
        for tool in self.toolbox.values():
            if isinstance(tool, ParallelCallsTool):
                tool.bind(self)  # its calls go through this runner, like every other call

    def tool_names(self) -> Sequence[str]:
        return list(self.toolbox)

    def untrusted_called(self) -> list[str]:
        """The untrusted tools this step has called, each once: what its code printed since
        may hold their text (``mesh.tools.untrusted.fence_output``)."""
        calls = [r for r in self.step.tool_calls if isinstance(r, UntrustedCallRecord)]
        return list(dict.fromkeys(r.name for r in calls if r.from_tool))

    def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """A call from code: the result, or the tool's error raised into the code."""
        self._calls += 1  # one bridge thread per run: no lock needed
        record = self.invoke(f"code_{self.step.step_number}_{self._calls}", name, args, kwargs)
        if record.exception is not None:
            raise record.exception
        return record.result

    def invoke(
        self,
        call_id: str,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> ToolCallRecord:
        with tool_span(name, call_id) as span:
            record = self._invoke(call_id, name, args, kwargs)
            span.set_attributes({
                "mesh.tool.arguments_size": len(repr(record.arguments)),
                "mesh.tool.result_size": len(record.observation),
                "mesh.tool.success": record.error is None,
            })  # fmt: skip
            if (error := record.error_info) is not None:
                record_error(span, error)
            return record

    def _invoke(
        self,
        call_id: str,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
    ) -> ToolCallRecord:
        if self.ctx.cancelled:  # nothing has started, so there is nothing to report
            raise RunCancelledError(f"run {self.ctx.run_id} of {self.ctx.agent} was cancelled")
        kwargs = dict(kwargs or {})
        unbound = {**{f"arg{i}": value for i, value in enumerate(args)}, **kwargs}
        tool = self.toolbox.get(name)
        kind = UntrustedCallRecord if tool is not None and tool.untrusted else ToolCallRecord
        record = kind(call_id=call_id, name=name, arguments=unbound)
        self.step.tool_calls.append(record)
        started = time.monotonic()
        try:
            tool = self._lookup(name)
            record.arguments = bind_arguments(name, tool.input_specs, args, kwargs)
        except MeshError as err:
            record.error, record.exception = err.message, err
            tool = None
        self._report_started(record)
        with self._reporting_finish(record, started):
            if tool is not None:
                self.ctx.raise_if_cancelled()
                record.result = tool.call(record.arguments)
                if isinstance(record.result, Image):
                    record.result = self._kept(record.result)
        return record

    def _kept(self, image: Image) -> str:
        """An image a tool returned: kept on the step, shown to the model at the next one.
        The text standing for it is the call's result: what the model reads in the tool's
        observation, and what a code agent's code gets (bytes never enter the jail)."""
        with self._images_lock:  # a tool-calling step's calls may run at once
            return self.step.keep_image(image)

    def fail(self, call_id: str, name: str, error: MeshError) -> ToolCallRecord:
        """Record a call that could not even be read (e.g. invalid JSON arguments)."""
        record = ToolCallRecord(
            call_id=call_id, name=name, arguments={}, error=error.message, exception=error
        )
        self.step.tool_calls.append(record)
        self._report_started(record)
        with self._reporting_finish(record, time.monotonic()):
            pass
        return record

    def _report_started(self, record: ToolCallRecord) -> None:
        self.ctx.report(ToolCallStarted, self.step.step_number, call_id=record.call_id,
                        name=record.name, arguments=record.arguments)  # fmt: skip

    @contextmanager
    def _reporting_finish(self, record: ToolCallRecord, started: float) -> Iterator[None]:
        """Around a started call: its one ToolCallFinished, with its real outcome whatever
        ends it. Errors become the record's; a cancellation or a bug still propagates."""
        try:
            yield
        except MeshError as err:
            record.error, record.exception = err.message, err
            if isinstance(err, RunCancelledError):
                raise
        except BaseException as err:
            record.error = f"the call ended with {type(err).__name__}"
            raise
        finally:
            record.duration_s = time.monotonic() - started
            self.ctx.report(
                ToolCallFinished,
                self.step.step_number,
                call_id=record.call_id,
                name=record.name,
                result=clip(_reported(record), MAX_EVENT_RESULT_CHARS),
                error=record.error_info,
                duration_s=record.duration_s,
            )

    def _lookup(self, name: str) -> Tool:
        tool = self.toolbox.get(name)
        if tool is None:
            raise ToolNotFoundError(
                f"there is no tool named {clip(name, 80)!r}. Available tools: "
                f"{', '.join(self.toolbox)}"
            )
        return tool


def _reported(record: ToolCallRecord) -> str:
    return record.unfenced if isinstance(record, UntrustedCallRecord) else record.observation


def call_directly(
    ctx: RunContext, toolbox: Mapping[str, Tool], name: str, arguments: Mapping[str, Any]
) -> ToolCallRecord:
    """One call from outside any agent step (``CallTool`` over RPC), the way a step makes
    it: validated, in its span, reported to ``ctx``'s sink (so audited), and under
    ``ctx``'s deadline and cancellation, which the tool sees as the current run."""
    token = current_scope.set(ctx)
    try:
        step = ActionStep(step_number=0, start_time=time.time())
        return ToolRunner(ctx, step, toolbox).invoke(f"call_{ctx.run_id}", name, kwargs=arguments)
    finally:
        current_scope.reset(token)
