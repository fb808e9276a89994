"""Managed agents: other agents a manager calls like tools.

Anything with a ``name``, a ``description`` and ``run(task)`` can be
managed: a local agent today, a remote agent over gRPC later. The manager
sees each as a tool taking one ``task`` string and returning the managed
agent's final answer; a managed run that fails becomes an error the
manager's model reads, not a crash of the manager.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from mesh.errors import MeshError, RunCancelledError, ToolExecutionError
from mesh.tools.base import Tool

__all__ = ["ManagedAgent", "ManagedAgentTool"]


@runtime_checkable
class ManagedAgent(Protocol):
    name: str
    description: str

    def run(self, task: str) -> Any: ...


class ManagedAgentTool(Tool):
    """Presents a managed agent as a tool named after it."""

    output_type = "any"

    def __init__(self, agent: ManagedAgent) -> None:
        self.agent = agent
        self.name = agent.name
        self.description = agent.description
        self.inputs = {
            "task": {
                "type": "string",
                "description": "A complete, self-contained description of the task to delegate.",
            }
        }
        super().__init__()

    def forward(self, task: str) -> Any:
        try:
            return self.agent.run(task)
        except RunCancelledError:
            raise
        except MeshError as err:
            raise ToolExecutionError(
                f"{self.name} could not finish the task ({err.code}): {err.message}",
                retryable=err.retryable,
            ) from err
