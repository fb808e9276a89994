"""Conversion between domain values and ``smolmesh.v1`` wire messages.

The only place that knows both worlds: servicers and the remote agent call
these functions at their edges, and nothing deeper sees a protobuf.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from google.protobuf import duration_pb2, timestamp_pb2

from mesh import untrusted_json
from mesh._proto import agent_pb2 as pb
from mesh.agents import events as ev
from mesh.agents.base import MultiStepAgent
from mesh.agents.budget import Budget
from mesh.agents.code_agent import CodeAgent
from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo, InvalidRequestError, ToolDefinitionError
from mesh.files import File
from mesh.models.base import TokenUsage, ToolCall
from mesh.models.images import MAX_IMAGES, Image, checked_images
from mesh.rpc.tool_change import ToolChange
from mesh.tools.base import Tool
from mesh.tools.schema import InputSpec, json_schema
from mesh.version import __version__

__all__ = [
    "SERVICE_NAME",
    "agent_usage_from_proto",
    "agent_usage_to_proto",
    "answer_text",
    "budget_from_proto",
    "budget_to_proto",
    "card_to_proto",
    "definition_to_proto",
    "duration_to_proto",
    "error_from_proto",
    "error_to_proto",
    "event_from_proto",
    "event_to_proto",
    "from_json",
    "images_from_proto",
    "images_to_proto",
    "seconds_from_proto",
    "timestamp_to_proto",
    "to_json",
    "tool_change_action_name",
    "tool_change_from_proto",
    "tool_change_to_proto",
    "tool_spec_from_proto",
    "tool_spec_to_proto",
    "usage_to_proto",
    "value_type_from_proto",
    "value_type_to_proto",
]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
"""``smolmesh.v1.AgentService``: the full name of the agent service, as calls address it."""


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    """A file as its JSON shape (``mesh.files``); anything else JSON lacks as its repr."""
    return value.to_json() if isinstance(value, File) else repr(value)


def from_json(text: str) -> Any:
    return untrusted_json.loads(text) if text else None


def answer_text(value: Any) -> str:
    return value if isinstance(value, str) else to_json(value)


def usage_to_proto(usage: TokenUsage) -> pb.TokenUsage:
    return pb.TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


def usage_from_proto(usage: pb.TokenUsage) -> TokenUsage:
    return TokenUsage(usage.input_tokens, usage.output_tokens)


def agent_usage_to_proto(usage: AgentUsage) -> pb.AgentUsage:
    return pb.AgentUsage(
        tokens=usage_to_proto(usage.tokens),
        cost_usd=usage.cost_usd or 0.0,
        cost_known=usage.cost_usd is not None,
        model_calls=usage.model_calls,
    )


def agent_usage_from_proto(usage: pb.AgentUsage) -> AgentUsage:
    return AgentUsage(
        tokens=usage_from_proto(usage.tokens),
        cost_usd=usage.cost_usd if usage.cost_known else None,
        model_calls=usage.model_calls,
    )


def error_to_proto(error: ErrorInfo) -> pb.ErrorDetail:
    return pb.ErrorDetail(reason=error.reason, retryable=error.retryable,
                          metadata=dict(error.metadata), message=error.message)  # fmt: skip


def error_from_proto(detail: pb.ErrorDetail) -> ErrorInfo:
    return ErrorInfo(detail.reason, detail.message, detail.retryable, dict(detail.metadata))


def budget_to_proto(budget: Budget) -> pb.Budget:
    out = pb.Budget()
    if budget.max_tokens is not None:
        out.max_tokens = budget.max_tokens
    if budget.max_cost_usd is not None:
        out.max_cost_usd = budget.max_cost_usd
    if budget.max_model_calls is not None:
        out.max_model_calls = budget.max_model_calls
    return out


def budget_from_proto(budget: pb.Budget) -> Budget:
    return Budget(
        max_tokens=budget.max_tokens if budget.HasField("max_tokens") else None,
        max_cost_usd=budget.max_cost_usd if budget.HasField("max_cost_usd") else None,
        max_model_calls=budget.max_model_calls if budget.HasField("max_model_calls") else None,
    )


def images_to_proto(images: Iterable[Image]) -> list[pb.Image]:
    """A run's images as typed wire parts (already checked: see ``checked_images``)."""
    return [pb.Image(media_type=image.media_type, data=image.data) for image in images]


def images_from_proto(images: Iterable[pb.Image]) -> tuple[Image, ...]:
    """A request's images, checked again as any run's (count, sizes, types that match the
    bytes): ``InvalidRequestError`` for a caller's bad one."""
    parts = list(images)
    if len(parts) > MAX_IMAGES:  # before building any
        raise InvalidRequestError(f"a run takes at most {MAX_IMAGES} images; got {len(parts)}")
    loaded = []
    for number, part in enumerate(parts, 1):
        try:
            loaded.append(Image(part.media_type, part.data))
        except InvalidRequestError as err:
            raise InvalidRequestError(f"image {number}: {err.message}") from None
    return checked_images(loaded)


def tool_spec_to_proto(tool: Tool) -> pb.ToolSpec:
    spec = _spec_to_proto(tool.name, tool.description, tool.output_type, tool.input_specs)
    spec.untrusted = tool.untrusted
    return spec


def definition_to_proto(definition: Mapping[str, Any]) -> pb.ToolSpec:
    """The spec of a smolagents-style definition (description, inputs, output_type; name
    optional); raises ``ToolDefinitionError`` for an ill-formed one."""
    inputs = definition.get("inputs", {})
    if not isinstance(inputs, Mapping):
        raise ToolDefinitionError("inputs must be an object of name: {type, description, ...}")
    specs = [InputSpec.from_dict(name, entry) for name, entry in inputs.items()]
    return _spec_to_proto(str(definition.get("name", "")), str(definition["description"]),
                          str(definition["output_type"]), specs)  # fmt: skip


def _spec_to_proto(
    name: str, description: str, output_type: str, inputs: Iterable[InputSpec]
) -> pb.ToolSpec:
    inputs = list(inputs)
    return pb.ToolSpec(
        name=name,
        description=description,
        output_type=value_type_to_proto(output_type),
        inputs=[
            pb.ToolInput(
                name=spec.name,
                type=value_type_to_proto(spec.type),
                description=spec.description,
                nullable=spec.nullable,
                required=spec.required,
                enum_json=to_json(list(spec.enum)) if spec.enum is not None else "",
                items=value_type_to_proto(spec.items) if spec.items else pb.VALUE_TYPE_UNSPECIFIED,
                default_json="" if spec.required else to_json(spec.default),
            )
            for spec in inputs
        ],
        input_schema_json=to_json(json_schema(inputs)),
    )


def value_type_to_proto(name: str) -> pb.ValueType:
    """``"integer"`` -> VALUE_TYPE_INTEGER; a name that is no type -> unspecified (which the
    receiving side refuses with a clear message)."""
    try:
        return cast("pb.ValueType", pb.ValueType.Value(f"VALUE_TYPE_{name.upper()}"))
    except ValueError:
        return pb.VALUE_TYPE_UNSPECIFIED


def value_type_from_proto(value: pb.ValueType) -> str:
    """VALUE_TYPE_INTEGER -> ``"integer"``; unspecified (or unknown) -> ``""``."""
    if value == pb.VALUE_TYPE_UNSPECIFIED or value not in pb.ValueType.values():
        return ""
    return pb.ValueType.Name(value).removeprefix("VALUE_TYPE_").lower()


def tool_spec_from_proto(spec: pb.ToolSpec) -> dict[str, Any]:
    """The smolagents-style definition (name, description, inputs, output_type) of a spec.

    Raises ``ValueError`` for JSON fields that do not parse.
    """
    inputs: dict[str, dict[str, Any]] = {}
    for item in spec.inputs:
        if item.name in inputs:
            raise ValueError(f"input {item.name!r} is declared twice")
        entry: dict[str, Any] = {
            "type": value_type_from_proto(item.type) or "unspecified",
            "description": item.description,
        }
        if item.nullable:
            entry["nullable"] = True
        if item.enum_json:
            entry["enum"] = untrusted_json.loads(item.enum_json)
        if item.items:
            entry["items"] = value_type_from_proto(item.items) or "unspecified"
        if not item.required:
            entry["default"] = (
                untrusted_json.loads(item.default_json) if item.default_json else None
            )
        inputs[item.name] = entry
    output_type = value_type_from_proto(spec.output_type) or "unspecified"
    definition: dict[str, Any] = {"name": spec.name, "description": spec.description,
                                  "inputs": inputs, "output_type": output_type}  # fmt: skip
    if spec.HasField("untrusted"):
        definition["untrusted"] = spec.untrusted
    return definition


def card_to_proto(agent: MultiStepAgent, capabilities: pb.Capabilities) -> pb.AgentCard:
    """The agent's card; what its service supports is the service's to say."""
    kind = pb.AGENT_KIND_CODE if isinstance(agent, CodeAgent) else pb.AGENT_KIND_TOOL_CALLING
    return pb.AgentCard(
        name=agent.name,
        description=agent.description,
        kind=kind,
        model_id=agent.model.model_id,
        tools=[tool_spec_to_proto(t) for t in agent.tools.values()],
        managed_agents=list(agent.managed_agents),
        version=__version__,
        capabilities=capabilities,
    )


def event_to_proto(event: ev.AgentEvent) -> pb.RunEvent:
    if isinstance(event.wire, pb.RunEvent):  # relayed: sent on as it came, at its new depth
        out = pb.RunEvent()
        out.CopyFrom(event.wire)
        out.depth = event.depth
        return out
    out = pb.RunEvent(
        agent=event.agent,
        run_id=event.run_id,
        parent_run_id=event.parent_run_id or "",
        depth=event.depth,
        step=event.step,
        time=timestamp_to_proto(event.timestamp),
    )
    match event:
        case ev.RunStarted():
            out.run_started.task = event.task
            out.run_started.trace_id = event.trace_id
        case ev.ModelOutput():
            out.model_output.CopyFrom(pb.ModelOutput(
                text=event.text or "",
                tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments)
                            for c in event.tool_calls],
                usage=usage_to_proto(event.usage),
                model_id=event.model_id,
                duration=duration_to_proto(event.duration_s),
            ))  # fmt: skip
        case ev.Planning():
            out.planning.CopyFrom(pb.Planning(
                plan=event.plan, initial=event.initial, usage=usage_to_proto(event.usage),
                model_id=event.model_id, duration=duration_to_proto(event.duration_s),
            ))  # fmt: skip
        case ev.ModelOutputDelta():
            out.model_output_delta.CopyFrom(
                pb.ModelOutputDelta(text=event.text, planning=event.planning)
            )
        case ev.CodeAction():
            out.code_action.code = event.code
        case ev.InputRequested():
            out.input_requested.question = event.question
        case ev.ToolCallStarted():
            out.tool_call_started.CopyFrom(pb.ToolCallStarted(
                call_id=event.call_id, name=event.name, arguments_json=to_json(event.arguments)
            ))  # fmt: skip
        case ev.ToolCallFinished():
            out.tool_call_finished.CopyFrom(pb.ToolCallFinished(
                call_id=event.call_id, name=event.name, result=event.result,
                duration=duration_to_proto(event.duration_s),
            ))  # fmt: skip
            if event.error is not None:
                out.tool_call_finished.error.CopyFrom(error_to_proto(event.error))
        case ev.Observation():
            out.observation.text = event.text
        case ev.StepFailed():
            out.step_failed.error.CopyFrom(error_to_proto(event.error))
        case ev.FinalAnswer():
            out.final_answer.CopyFrom(pb.FinalAnswer(
                answer_json=to_json(event.answer), answer_text=answer_text(event.answer)
            ))  # fmt: skip
        case ev.RunFinished():
            out.run_finished.CopyFrom(pb.RunFinished(
                usage=usage_to_proto(event.usage), duration=duration_to_proto(event.duration_s),
                steps=event.steps,
                usage_by_agent={name: agent_usage_to_proto(u)
                                for name, u in event.usage_by_agent.items()},
            ))  # fmt: skip
            if event.error is not None:
                out.run_finished.error.CopyFrom(error_to_proto(event.error))
    return out


def event_from_proto(message: pb.RunEvent, depth_offset: int = 0) -> ev.AgentEvent | None:
    """The domain event of a wire event, ``depth_offset`` levels deeper; None if unknown."""
    common: dict[str, Any] = {
        "agent": message.agent,
        "run_id": message.run_id,
        "parent_run_id": message.parent_run_id or None,
        "depth": message.depth + depth_offset,
        "step": message.step,
        "timestamp": seconds_from_proto(message.time),
        "wire": message,
    }
    kind = message.WhichOneof("kind")
    if kind == "run_started":
        started = message.run_started
        return ev.RunStarted(task=started.task, trace_id=started.trace_id, **common)
    if kind == "model_output":
        m = message.model_output
        return ev.ModelOutput(
            text=m.text or None,
            tool_calls=tuple(ToolCall(c.id, c.name, c.arguments_json) for c in m.tool_calls),
            usage=usage_from_proto(m.usage),
            model_id=m.model_id,
            duration_s=seconds_from_proto(m.duration),
            **common,
        )
    if kind == "planning":
        plan = message.planning
        return ev.Planning(plan=plan.plan, initial=plan.initial, usage=usage_from_proto(plan.usage),
                           model_id=plan.model_id, duration_s=seconds_from_proto(plan.duration),
                           **common)  # fmt: skip
    if kind == "model_output_delta":
        delta = message.model_output_delta
        return ev.ModelOutputDelta(text=delta.text, planning=delta.planning, **common)
    if kind == "code_action":
        return ev.CodeAction(code=message.code_action.code, **common)
    if kind == "input_requested":
        return ev.InputRequested(question=message.input_requested.question, **common)
    if kind == "tool_call_started":
        s = message.tool_call_started
        return ev.ToolCallStarted(
            call_id=s.call_id, name=s.name, arguments=from_json(s.arguments_json) or {}, **common
        )
    if kind == "tool_call_finished":
        f = message.tool_call_finished
        return ev.ToolCallFinished(
            call_id=f.call_id,
            name=f.name,
            result=f.result,
            error=error_from_proto(f.error) if f.HasField("error") else None,
            duration_s=seconds_from_proto(f.duration),
            **common,
        )
    if kind == "observation":
        return ev.Observation(text=message.observation.text, **common)
    if kind == "step_failed":
        return ev.StepFailed(error=error_from_proto(message.step_failed.error), **common)
    if kind == "final_answer":
        return ev.FinalAnswer(answer=from_json(message.final_answer.answer_json), **common)
    if kind == "run_finished":
        r = message.run_finished
        return ev.RunFinished(
            usage=usage_from_proto(r.usage),
            duration_s=seconds_from_proto(r.duration),
            steps=r.steps,
            error=error_from_proto(r.error) if r.HasField("error") else None,
            usage_by_agent={
                name: agent_usage_from_proto(u) for name, u in r.usage_by_agent.items()
            },
            **common,
        )
    return None


def tool_change_to_proto(change: ToolChange) -> pb.ToolChange:
    return pb.ToolChange(
        time=timestamp_to_proto(change.timestamp), agent=change.agent,
        action=cast("pb.ToolChangeAction",
                    pb.ToolChangeAction.Value(f"TOOL_CHANGE_ACTION_{change.action.upper()}")),
        tool=change.tool,
        caller=change.caller, schema_sha256=change.schema_sha256, address=change.address,
        old_sha256=change.old_sha256, diff=change.diff,
    )  # fmt: skip


def tool_change_action_name(action: pb.ToolChangeAction) -> str:
    """TOOL_CHANGE_ACTION_TOOL_CONFIGURED -> ``"tool_configured"``."""
    return pb.ToolChangeAction.Name(action).removeprefix("TOOL_CHANGE_ACTION_").lower()


def tool_change_from_proto(change: pb.ToolChange) -> ToolChange:
    """A change as a client reads it (without the remote tool's definition, which stays in
    the service's log)."""
    known = change.action in pb.ToolChangeAction.values()
    return ToolChange(
        timestamp=seconds_from_proto(change.time), agent=change.agent,
        action=tool_change_action_name(change.action) if known else "unspecified",
        tool=change.tool, caller=change.caller, schema_sha256=change.schema_sha256,
        address=change.address, old_sha256=change.old_sha256, diff=change.diff,
    )  # fmt: skip


def timestamp_to_proto(seconds: float) -> timestamp_pb2.Timestamp:
    """Seconds since the Unix epoch as a Timestamp."""
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def duration_to_proto(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def seconds_from_proto(value: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    """A Timestamp (seconds since the epoch) or a Duration, in seconds."""
    return float(value.ToNanoseconds()) / 1e9
