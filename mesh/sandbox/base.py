"""The executor contract between ``CodeAgent`` and wherever code runs.

An executor holds the state of one agent run (variables, functions,
imports) across that run's snippets. It never owns tools: each snippet is
given a ``ToolBridge``, the host side of tool calls, and the code's tool
functions are stubs that call back through it. That is what lets the same
agent loop drive an in-process executor and a jailed interpreter in another
process, and what makes ``agent.tools`` changes take effect at the next step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ExecutionResult", "Executor", "ToolBridge"]


class ToolBridge(Protocol):
    """Host side of the tool calls that code makes."""

    def tool_names(self) -> Sequence[str]: ...

    def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Validate and run one call; raise a ``ToolError`` the code may catch."""
        ...


@dataclass(frozen=True)
class ExecutionResult:
    output: str = ""
    """What the snippet printed (capped)."""
    value: str | None = None
    """repr() of the snippet's last expression, when it has one that is not None."""
    error: str | None = None
    """The useful part of the traceback, or which limit the snippet broke."""
    is_final: bool = False
    final_answer: Any = None
    note: str | None = None
    """Something the model must know besides the result, e.g. that state was lost."""


class Executor(Protocol):
    def run(self, code: str, bridge: ToolBridge) -> ExecutionResult: ...

    def close(self) -> None:
        """End the run's interpreter and free what it holds."""
        ...
