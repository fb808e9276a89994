"""``run_parallel``: a code agent's way to run several tool or agent calls at once.

Model-written code runs in a jail whose tool stubs call back one at a time;
fanning out there would mean threads in the jail. Instead the whole batch
crosses once: ``run_parallel(calls=[...])`` hands the list to the host, which
runs each call through the step's ``ToolRunner`` (validated, recorded,
reported, traced like any call) on a bounded pool, each in a copy of the
calling context, so every call carries the run's deadline and cancellation,
and its span is a sibling branch under ``run_parallel``'s. The run's budget
is shared: each delegation starts with an equal share (by the number of
calls at once) of what is left then, so the batch cannot spend more than the
run has.
Results come back in the order of the calls; one call's failure is that
item's error, never the batch's. Cancelling the run cancels every call.
"""

from __future__ import annotations

import contextvars
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mesh.agents.context import sharing_budget
from mesh.errors import ToolArgumentError, ToolError
from mesh.tools.base import Tool

if TYPE_CHECKING:
    from mesh.agents.tool_runner import ToolRunner

__all__ = ["MAX_CALLS", "PARALLEL", "ParallelCallsTool"]

PARALLEL = "run_parallel"
MAX_CALLS = 1000


class ParallelCallsTool(Tool):
    name = PARALLEL
    description = (
        "Run several calls of your tools or team members at once and wait for all of them. "
        'calls: a list of {"tool": NAME, "arguments": {...}}, e.g. '
        '[{"tool": "researcher", "arguments": {"task": "..."}}]. Returns a list in the same '
        'order: {"ok": true, "result": ...} or {"ok": false, "error": "..."} for each call, so '
        "one failure never loses the others."
    )
    inputs = {
        "calls": {"type": "array", "items": "object",
                  "description": 'The calls: {"tool": name, "arguments": {name: value}}.'},
        "max_concurrency": {"type": "integer", "nullable": True, "default": None,
                            "description": "At most this many at once (default: the agent's "
                            "limit)."},
    }  # fmt: skip
    output_type = "array"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._runner: ToolRunner | None = None
        self._batches = itertools.count(1)
        super().__init__()

    def bind(self, runner: ToolRunner) -> None:
        """The step's runner, through which every call goes (set when the step starts)."""
        self._runner = runner

    def forward(self, calls: list[dict[str, Any]], max_concurrency: int | None = None) -> list[Any]:
        runner = self._runner
        if runner is None:
            raise ToolError(f"{PARALLEL} runs only inside an agent's step")
        parsed = [_parse(n, call) for n, call in enumerate(calls)]
        if len(parsed) > MAX_CALLS:
            raise ToolArgumentError(f"{PARALLEL}: at most {MAX_CALLS} calls, got {len(parsed)}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ToolArgumentError(f"{PARALLEL}: max_concurrency must be at least 1")
        if not parsed:
            return []
        workers = min(len(parsed), self.limit, max_concurrency or self.limit)
        batch = f"{PARALLEL}_{runner.step.step_number}_{next(self._batches)}"

        def one(index: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            sharing_budget(runner.ctx, workers)  # in this call's own context only
            record = runner.invoke(f"{batch}_{index}", name, kwargs=arguments)
            if record.error is not None:
                return {"ok": False, "error": record.error}
            return {"ok": True, "result": record.result}

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fan-out") as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, n, name, arguments)
                       for n, (name, arguments) in enumerate(parsed)]  # fmt: skip
            return [future.result() for future in futures]  # a cancelled run raises here


def _parse(index: int, call: Any) -> tuple[str, dict[str, Any]]:
    where = f"{PARALLEL}: calls[{index}]"
    if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
        raise ToolArgumentError(f'{where} must be {{"tool": NAME, "arguments": {{...}}}}')
    if call["tool"] == PARALLEL:
        raise ToolArgumentError(f"{where}: {PARALLEL} cannot call itself")
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict) or set(call) - {"tool", "arguments"}:
        raise ToolArgumentError(f'{where}: give only "tool" and "arguments" (an object)')
    return call["tool"], arguments
