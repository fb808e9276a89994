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
            },
            "additional_args": {
                "type": "object",
                "description": "Values the team member needs beside the task, by name "
                "(JSON values, e.g. data to work on): its code gets them as variables.",
                "nullable": True,
                "default": None,
            },
        }
        # An agent from outside the mesh (A2AAgent) says so: the model reads its answers as data.
        super().__init__(untrusted=getattr(agent, "untrusted", None))

    def forward(self, task: str, additional_args: dict[str, Any] | None = None) -> Any:
        try:
            if additional_args:  # only then: a managed agent of the user's may not take them
                return self.agent.run(task, additional_args=additional_args)  # type: ignore[call-arg]
            return self.agent.run(task)
        except RunCancelledError:
            raise
        except MeshError as err:
            raise ToolExecutionError(
                f"{self.name} could not finish the task ({err.code}): {err.message}",
                retryable=err.retryable,
            ) from err
