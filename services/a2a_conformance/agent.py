"""The A2A conformance agent: a mesh agent that does what the A2A TCK's scenarios ask.

The TCK (``a2aproject/a2a-tck``, ``scenarios/*.feature``) drives the agent
under test by the prefix of each message's id. Here that agent is an
ordinary tool-calling mesh agent served over A2A; only its model is a
script: it reads the id of the message it answers (the A2A facade puts it in
the run's metadata) and calls the tools an LLM would: ``user_input`` to ask
for input, ``wait`` to take time, ``final_answer`` with text, data or a file
(``mesh.files``). So every scenario runs through the real run model: jail
aside, the same runs, events, records, cancellation and facade as any agent.

A "message instead of a task" is a run that asks to be answered as a direct
message (``REPLY_KEY`` in its metadata); "rejected", which a mesh run has no
state for, is a failed run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mesh import ChatMessage, Model, ModelResponse, Tool, ToolCall, ToolCallingAgent
from mesh.agents.context import RunContext, active_run
from mesh.agents.user_input import UserInputTool
from mesh.errors import ModelCallError
from mesh.files import File
from mesh.rpc.a2a.handler import REPLY_KEY

__all__ = ["ConformanceModel", "WaitTool", "build"]

_FILE = File("output.txt", "text/plain", data=b"tck").to_json()
_FILE_URL = File("output.txt", "text/plain", url="https://example.com/output.txt").to_json()
# A prefix comes before the shorter ones it starts with (-file-url before -file).
ANSWERS: list[tuple[str, Any]] = [
    ("tck-complete-task", "Hello from TCK"),
    ("tck-artifact-text", "Generated text content"),
    ("tck-artifact-file-url", _FILE_URL),
    ("tck-artifact-file", _FILE),
    ("tck-artifact-data", {"key": "value", "count": 42}),
    ("tck-message-response", "Direct message response"),
    ("tck-stream-001", "Stream hello from TCK"),
    ("tck-stream-002", "Completed"),
    ("tck-stream-003", "Stream task lifecycle"),
    ("tck-stream-ordering-001", "Ordered output"),
    ("tck-stream-artifact-text", "Streamed text content"),
    ("tck-stream-artifact-file", _FILE),
    ("tck-stream-artifact-chunked", "chunk-1 chunk-2"),
    ("test-resubscribe-message-id", "Done waiting"),
]
WAIT_S = 4.0
"""How long the resubscription scenario's task works (twice the TCK's streaming timeout)."""


class WaitTool(Tool):
    name = "wait"
    description = "Waits the given number of seconds (stops at once if the run is cancelled)."
    inputs = {"seconds": {"type": "number", "description": "How long to wait."}}
    output_type = "string"

    def forward(self, seconds: float) -> str:
        run = active_run()
        if run is not None:
            run.pause(min(seconds, 60.0))
        return f"waited {seconds} s"


class ConformanceModel(Model):
    """Answers by the message id in the run's metadata (see the module docstring)."""

    model_id = "a2a-conformance-script"

    def __init__(self) -> None:
        self._ids = itertools.count()

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        **_: Any,
    ) -> ModelResponse:
        run = active_run()
        message_id = run.metadata.get("a2a.message_id", "") if run is not None else ""
        call = self._call(run, message_id, messages)
        return ModelResponse(ChatMessage("assistant", None, (call,)))

    def _call(self, run: RunContext | None, message_id: str, messages: Sequence[ChatMessage]
              ) -> ToolCall:  # fmt: skip
        if message_id.startswith("tck-input-required"):
            return self._tool("user_input", {"question": "What should I do next?"})
        if message_id.startswith("tck-message-response") and run is not None:
            run.metadata[REPLY_KEY] = "message"  # answered as a Message, not a Task
        if message_id.startswith("tck-reject-task"):
            raise ModelCallError("rejected", retryable=False)
        if message_id.startswith("test-resubscribe-message-id") and not _waited(messages):
            return self._tool("wait", {"seconds": WAIT_S})
        task = next((m for m in messages if m.role == "user"), ChatMessage("user", ""))
        if message_id.startswith("smolmesh-echo"):  # what the model was told (our tests)
            seen = f"{task.content} ({len(task.images)} image(s))"
            return self._tool("final_answer", {"answer": seen})
        for prefix, answer in ANSWERS:
            if message_id.startswith(prefix):
                return self._tool("final_answer", {"answer": answer})
        unhandled = f"Unhandled messageId prefix: {message_id}"
        return self._tool("final_answer", {"answer": unhandled if message_id else task.content})

    def _tool(self, name: str, arguments: Mapping[str, Any]) -> ToolCall:
        return ToolCall(f"call_{next(self._ids)}", name, json.dumps(arguments))


def _waited(messages: Sequence[ChatMessage]) -> bool:
    return any(m.role == "tool" and (m.content or "").startswith("waited") for m in messages)


def build() -> ToolCallingAgent:
    return ToolCallingAgent(
        tools=[UserInputTool(), WaitTool()],
        model=ConformanceModel(),
        name="a2a_conformance",
        description="Answers the A2A TCK's scenarios by message id prefix (no LLM).",
        max_steps=20,
    )
