"""``RemoteTool``: a tool that runs on another service, used like a local one.

Its schema is declared here (so the model sees it and every call is validated
before it leaves), and each call goes to ``CallTool`` of the service at its
address: any mesh agent, or any server in any language that implements that
one method. The run's remaining deadline bounds the call, cancelling the run
cancels it, and every failure comes back as a ``ToolExecutionError`` the
model can read, never as an error that ends the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.errors import InvalidRequestError, NotFoundError, ToolDefinitionError, ToolExecutionError
from mesh.rpc.convert import from_json, to_json, tool_spec_from_proto
from mesh.rpc.remote import channel_target
from mesh.rpc.security import MeshSecurity, open_channel
from mesh.rpc.status import error_from_rpc
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
    ) -> None:
        """``definition``: name, description, inputs and output_type, as a Tool class has them."""
        self.name = definition["name"]
        self.description = definition["description"]
        self.inputs = dict(definition["inputs"])
        self.output_type = definition["output_type"]
        self.address = address
        self.remote_name = remote_name or self.name
        self.timeout_s = timeout_s
        super().__init__()  # checks the definition
        self._metadata = security.call_metadata() if security is not None else ()
        self._channel = open_channel(address, security)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "inputs": {s.name: s.to_dict() for s in self.input_specs},
                "output_type": self.output_type}  # fmt: skip

    def forward(self, **arguments: Any) -> Any:
        run = current_scope.get()
        remaining = run.remaining() if run is not None else None
        timeout = self.timeout_s if remaining is None else max(0.0, min(remaining, self.timeout_s))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the remote tool's server span joins this trace
        request = pb.CallToolRequest(name=self.remote_name, arguments_json=to_json(arguments))
        call = self._stub.CallTool.future(
            request, timeout=timeout, metadata=(*carrier.items(), *self._metadata)
        )
        forget = run.on_cancel(call.cancel) if run is not None else lambda: None
        try:
            response: pb.CallToolResponse = call.result()
        except grpc.FutureCancelledError as err:
            if run is not None:
                run.raise_if_cancelled()  # the run's own outcome, not the tool's failure
            raise ToolExecutionError(f"{self.name}: the call was cancelled") from err
        except grpc.RpcError as err:
            error = error_from_rpc(err, f"{self.name} (remote tool at {self.address})")
            raise ToolExecutionError(error.message) from err
        finally:
            forget()
        try:
            return from_json(response.result_json)
        except json.JSONDecodeError as err:
            raise ToolExecutionError(f"{self.name}: the remote answered invalid JSON") from err

    def close(self) -> None:
        self._channel.close()


def fetch_remote_tools(
    address: str,
    names: Sequence[str] = (),
    *,
    security: MeshSecurity | None = None,
    timeout_s: float = 30.0,
) -> list[RemoteTool]:
    """The tools a ``CallTool`` service lists (only ``names`` if given), ready to call.

    Their schemas are the service's own (``ListTools``), so the caller never restates them.
    """
    target = channel_target(address)
    with open_channel(target, security) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = security.call_metadata() if security is not None else ()
        try:
            listed = stub.ListTools(pb.ListToolsRequest(), timeout=min(timeout_s, 30.0),
                                    metadata=metadata, wait_for_ready=True).tools  # fmt: skip
        except grpc.RpcError as err:
            raise error_from_rpc(err, f"tool service at {address}") from err
    specs = {spec.name: spec for spec in listed}
    missing = [name for name in names if name not in specs]
    if missing:
        raise NotFoundError(f"{address} has no tool(s) {missing} (it has "
                            f"{', '.join(specs) or 'none'})")  # fmt: skip
    tools = []
    for name in names or list(specs):
        try:
            definition = tool_spec_from_proto(specs[name])
            tools.append(RemoteTool(definition, target, timeout_s=timeout_s, security=security))
        except (ToolDefinitionError, ValueError) as err:
            detail = err.message if isinstance(err, ToolDefinitionError) else str(err)
            raise InvalidRequestError(f"{address}: tool {name!r} has an unusable schema: "
                                      f"{detail}") from err  # fmt: skip
    return tools
