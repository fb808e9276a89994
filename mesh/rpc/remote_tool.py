"""``RemoteTool``: a tool that runs on another service, used like a local one.

Its schema is declared here (so the model sees it and every call is validated
before it leaves), and each call goes to ``CallTool`` of the service at its
address: any mesh agent, or any server in any language that implements that
one method. The run's remaining deadline bounds the call, cancelling the run
cancels it, and every failure comes back as a ``ToolExecutionError`` the
model can read, never as an error that ends the run.

A remote tool is untrusted unless its caller says otherwise, and a tool its
own service marks untrusted (``ToolSpec.untrusted``, the definition's
``untrusted``) stays untrusted whatever the caller says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mesh.errors import (
    InvalidRequestError,
    MeshError,
    NotFoundError,
    ToolDefinitionError,
    ToolExecutionError,
)
from mesh.rpc.client import AgentClient
from mesh.rpc.security import MeshSecurity
from mesh.run_scope import current_scope
from mesh.tools.base import Tool

__all__ = ["RemoteTool", "fetch_remote_tools"]


class RemoteTool(Tool):
    def __init__(
        self,
        definition: Mapping[str, Any],
        address: str,
        *,
        remote_name: str | None = None,
        timeout_s: float = 30.0,
        security: MeshSecurity | None = None,
        untrusted: bool = True,
    ) -> None:
        """``definition``: name, description, inputs and output_type, as a Tool class has them
        (and ``untrusted``, as its service says). ``untrusted``: see the module docstring."""
        self.name = definition["name"]
        self.description = definition["description"]
        self.inputs = dict(definition["inputs"])
        self.output_type = definition["output_type"]
        self.address = address
        self.remote_name = remote_name or self.name
        self.timeout_s = timeout_s
        super().__init__(untrusted=untrusted or definition.get("untrusted") is True)  # checks it
        self._client = AgentClient(address, security=security,
                                   label=f"{self.name} (remote tool at {address})")  # fmt: skip

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "inputs": {s.name: s.to_dict() for s in self.input_specs},
                "output_type": self.output_type, "untrusted": self.untrusted}  # fmt: skip

    def forward(self, **arguments: Any) -> Any:
        run = current_scope.get()
        remaining = run.remaining() if run is not None else None
        timeout = self.timeout_s if remaining is None else max(0.0, min(remaining, self.timeout_s))
        try:
            return self._client.call_tool(self.remote_name, arguments, timeout_s=timeout,
                                          scope=run)  # fmt: skip
        except MeshError as err:
            if run is not None and run.cancelled:
                run.raise_if_cancelled()  # the run's own outcome, not the tool's failure
            raise ToolExecutionError(err.message) from err

    def close(self) -> None:
        self._client.close()


def fetch_remote_tools(
    address: str,
    names: Sequence[str] = (),
    *,
    security: MeshSecurity | None = None,
    timeout_s: float = 30.0,
    untrusted: bool = True,
) -> list[RemoteTool]:
    """The tools a ``CallTool`` service lists (only ``names`` if given), ready to call.

    Their schemas are the service's own (``ListTools``), so the caller never restates them;
    whether the model reads their results fenced (``untrusted``) is the caller's to say.
    """
    with AgentClient(address, security=security, label=f"tool service at {address}") as client:
        listed = client.list_tools(timeout_s=min(timeout_s, 30.0), wait_for_ready=True)
    definitions = {definition["name"]: definition for definition in listed}
    missing = [name for name in names if name not in definitions]
    if missing:
        raise NotFoundError(f"{address} has no tool(s) {missing} (it has "
                            f"{', '.join(definitions) or 'none'})")  # fmt: skip
    tools = []
    for name in names or list(definitions):
        try:
            tools.append(RemoteTool(definitions[name], address, timeout_s=timeout_s,
                                    security=security, untrusted=untrusted))  # fmt: skip
        except (ToolDefinitionError, ValueError) as err:
            detail = err.message if isinstance(err, ToolDefinitionError) else str(err)
            raise InvalidRequestError(f"{address}: tool {name!r} has an unusable schema: "
                                      f"{detail}") from err  # fmt: skip
    return tools
