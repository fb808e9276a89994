"""A delegate's events are relayed as they came: the wire message, at its new depth.

A manager decodes each event of a delegate's stream (it tracks the delegate's run), but
sends it on by copying the message it received rather than encoding the event again; the
copy must be what encoding would have given, and keep everything the delegate sent.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mesh._proto import agent_pb2 as pb
from mesh.agents.events import AgentEvent, FinalAnswer, ModelOutput, RunFinished, ToolCallFinished
from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo
from mesh.models.base import TokenUsage, ToolCall
from mesh.rpc.convert import event_from_proto, event_to_proto

IDS = {"agent": "math", "run_id": "r2", "parent_run_id": "r1", "depth": 1, "step": 2,
       "timestamp": 1_796_000_000.25}  # fmt: skip
EVENTS = [
    ModelOutput(
        text="thinking",
        tool_calls=(ToolCall("c1", "spf", '{"n": 2015}'),),
        usage=TokenUsage(120, 30),
        model_id="gpt",
        duration_s=0.5,
        **IDS,
    ),
    ToolCallFinished(
        call_id="c1",
        name="spf",
        result="",
        duration_s=0.01,
        error=ErrorInfo("tool_error", "no", retryable=True),
        **IDS,
    ),
    FinalAnswer(answer={"factor": 5, "why": ["5 divides 2015"]}, **IDS),
    RunFinished(
        usage=TokenUsage(120, 30),
        duration_s=1.5,
        steps=2,
        usage_by_agent={"math": AgentUsage(TokenUsage(120, 30), 0.01, 1)},
        **IDS,
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_a_relayed_event_is_sent_on_as_it_came_but_for_its_depth(event: AgentEvent) -> None:
    received = pb.RunEvent.FromString(event_to_proto(event).SerializeToString())
    relayed = event_from_proto(received, depth_offset=2)
    assert relayed is not None and relayed.wire is received
    sent = event_to_proto(relayed)
    assert sent.depth == 3 and sent is not received and received.depth == 1
    assert sent == event_to_proto(replace(relayed, wire=None))  # what encoding would give
    sent.depth = 1
    assert sent == received  # and nothing the delegate sent was lost
