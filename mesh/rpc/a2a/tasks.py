"""Our runs as A2A tasks, and A2A messages as our run requests: the mapping, both ways.

A task is a run (task id = run id) in a context that is our session
(context id = session id). States: queued is submitted, running is working
(input-required while the run waits in ``user_input``), succeeded and
max_steps are completed (``smolmesh.state`` says which), failed is failed,
cancelled (by a caller or a deadline) is canceled.

The run's answer is the task's one artifact, ``answer``: a string as a text
part, a file (``mesh.files``) as a file part, any other JSON as a data part.
Everything else the run reports streams as working status updates whose
message is the step as ``mesh run`` prints it, with the event's identity
(agent, run id, parent, depth, step) in the message's ``smolmesh`` metadata:
A2A has no delegation tree, so that is where ours survives the crossing.
Live model pieces (``ModelOutputDelta``) are not sent: the step that follows
carries the whole text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format, struct_pb2

from mesh import untrusted_json
from mesh._proto import agent_pb2 as pb
from mesh.agents.render import StepRenderer
from mesh.agents.run_args import args_from_json
from mesh.errors import InvalidRequestError
from mesh.files import File
from mesh.host.run_record import RunRecord, RunStatus
from mesh.models.images import MAX_IMAGES, MEDIA_TYPES, Image
from mesh.rpc.convert import event_from_proto, seconds_from_proto, timestamp_to_proto
from mesh.text import clip

__all__ = [
    "ANSWER_ARTIFACT",
    "INTERRUPTED",
    "TERMINAL",
    "ContentTypeError",
    "EventMapper",
    "RunInput",
    "history_of",
    "run_input",
    "task_of",
    "task_state",
]

ANSWER_ARTIFACT = "answer"
TERMINAL = frozenset({a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_FAILED, a2a.TASK_STATE_CANCELED,
                      a2a.TASK_STATE_REJECTED})  # fmt: skip
INTERRUPTED = frozenset({a2a.TASK_STATE_INPUT_REQUIRED, a2a.TASK_STATE_AUTH_REQUIRED})
MAX_PARTS = 64
MAX_MESSAGE_ID_CHARS = 256
MAX_STATUS_TEXT_CHARS = 8_000
_STOPPED = ("run_cancelled", "deadline_exceeded")
"""The error reasons of a run that was stopped rather than failed (our record: cancelled)."""


# ------------------------------------------------------------------------- runs -> tasks


def task_state(record: RunRecord, question: str | None = None) -> a2a.TaskState:
    match record.status:
        case RunStatus.QUEUED:
            return a2a.TASK_STATE_SUBMITTED
        case RunStatus.RUNNING:
            return a2a.TASK_STATE_INPUT_REQUIRED if question else a2a.TASK_STATE_WORKING
        case RunStatus.SUCCEEDED | RunStatus.MAX_STEPS:
            return a2a.TASK_STATE_COMPLETED
        case RunStatus.CANCELLED:
            return a2a.TASK_STATE_CANCELED
    return a2a.TASK_STATE_FAILED


def task_of(
    record: RunRecord,
    *,
    question: str | None = None,
    history: Sequence[a2a.Message] = (),
    history_length: int | None = None,
    include_artifacts: bool = True,
) -> a2a.Task:
    """The run as a task; ``history_length`` None keeps all the history, n the last n."""
    state = task_state(record, question)
    status = a2a.TaskStatus(state=state)
    updated = record.ended or record.started or record.created
    if updated:
        status.timestamp.CopyFrom(timestamp_to_proto(updated))
    text = question if state == a2a.TASK_STATE_INPUT_REQUIRED else _ending_text(record)
    if text:
        status.message.CopyFrom(agent_message(text, record.run_id, record.session_id))
    task = a2a.Task(id=record.run_id, context_id=record.session_id, status=status)
    if include_artifacts and state == a2a.TASK_STATE_COMPLETED:
        task.artifacts.append(answer_artifact(record.answer))
    if history_length is None:
        task.history.extend(history)
    elif history_length > 0:
        task.history.extend(history[-history_length:])
    task.metadata.update({"smolmesh": _run_metadata(record)})
    return task


def answer_artifact(answer: Any) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=ANSWER_ARTIFACT, name=ANSWER_ARTIFACT,
                        parts=[answer_part(answer)])  # fmt: skip


def answer_part(answer: Any) -> a2a.Part:
    if isinstance(answer, str):
        return a2a.Part(text=answer)
    file = File.from_json(answer)
    if file is not None:
        part = a2a.Part(filename=file.name, media_type=file.media_type)
        if file.data is not None:
            part.raw = file.data
        else:
            part.url = file.url or ""
        return part
    value = struct_pb2.Value()
    json_format.Parse(json.dumps(answer, default=repr), value)
    return a2a.Part(data=value, media_type="application/json")


def agent_message(text: str, task_id: str, context_id: str, message_id: str = "") -> a2a.Message:
    return a2a.Message(
        message_id=message_id or f"{task_id}:status",
        role=a2a.ROLE_AGENT,
        task_id=task_id,
        context_id=context_id,
        parts=[a2a.Part(text=clip(text, MAX_STATUS_TEXT_CHARS))],
    )


def history_of(record: RunRecord, events: Iterable[pb.RunEvent],
               sent: Sequence[str] = ()) -> list[a2a.Message]:  # fmt: skip
    """The conversation of the task: its request, then each question the run asked and the
    answer it got, oldest first (from the events the run's record keeps). The user's
    messages keep the ids their sender gave them, where ``sent`` has them (in order)."""
    ids = (record.run_id, record.session_id)
    given = iter(sent)
    messages = []
    for event in events:
        if event.depth != 0:
            continue
        kind = event.WhichOneof("kind")
        number = f"{record.run_id}:{event.index}"
        if kind == "run_started":
            said = event.run_started.task
            messages.append(_message(a2a.ROLE_USER, said, *ids, next(given, number)))
        elif kind == "input_requested":
            messages.append(_message(a2a.ROLE_AGENT, event.input_requested.question, *ids, number))
        elif kind == "tool_call_finished" and event.tool_call_finished.name == "user_input":
            finished = event.tool_call_finished
            if not finished.HasField("error"):
                messages.append(_message(a2a.ROLE_USER, finished.result, *ids,
                                         next(given, number)))  # fmt: skip
    return messages


def _message(role: a2a.Role, text: str, task_id: str, context_id: str, message_id: str
             ) -> a2a.Message:  # fmt: skip
    return a2a.Message(message_id=message_id, role=role, task_id=task_id, context_id=context_id,
                       parts=[a2a.Part(text=clip(text, MAX_STATUS_TEXT_CHARS))])  # fmt: skip


def _ending_text(record: RunRecord) -> str:
    if record.error is not None and record.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        return f"{record.error.reason}: {record.error.message}"
    return ""


def _run_metadata(record: RunRecord) -> dict[str, Any]:
    """What A2A has no field for: our state, steps, usage and cost, by agent."""
    return {
        "agent": record.agent,
        "state": record.status.value,
        "steps": record.steps,
        "usage": {
            "input_tokens": record.usage.input_tokens,
            "output_tokens": record.usage.output_tokens,
        },
        "usage_by_agent": {
            name: {
                "input_tokens": u.tokens.input_tokens,
                "output_tokens": u.tokens.output_tokens,
                "cost_usd": u.cost_usd,
                "model_calls": u.model_calls,
            }
            for name, u in record.usage_by_agent.items()
        },
    }


# ---------------------------------------------------------------- events -> updates

Update = a2a.TaskStatusUpdateEvent | a2a.TaskArtifactUpdateEvent


@dataclass
class EventMapper:
    """One stream's translation of a run's events into A2A updates (it keeps the renderer's
    state, and whether the stream's last update ended it)."""

    task_id: str
    context_id: str
    renderer: StepRenderer = field(default_factory=StepRenderer)
    last_state: a2a.TaskState = a2a.TASK_STATE_WORKING

    def updates(self, event: pb.RunEvent) -> list[Update]:
        kind = event.WhichOneof("kind")
        top = event.depth == 0 and event.run_id == self.task_id
        if kind == "model_output_delta":
            return []
        if top and kind == "input_requested":
            return [self._status(a2a.TASK_STATE_INPUT_REQUIRED, event.input_requested.question,
                                 event)]  # fmt: skip
        if top and kind == "final_answer":
            answer = untrusted_json.loads(event.final_answer.answer_json or "null")
            return [a2a.TaskArtifactUpdateEvent(
                task_id=self.task_id, context_id=self.context_id,
                artifact=answer_artifact(answer), last_chunk=True,
            )]  # fmt: skip
        if top and kind == "run_finished":
            return [self._ending(event.run_finished, event)]
        domain = event_from_proto(event)
        lines = self.renderer.lines(domain) if domain is not None else []
        if not lines:
            return []
        return [self._status(a2a.TASK_STATE_WORKING, "\n".join(lines), event)]

    def ending(self, record: RunRecord) -> a2a.TaskStatusUpdateEvent:
        """The last update, from the record, for a run whose events ended without one."""
        state = task_state(record)
        self.last_state = state
        update = a2a.TaskStatusUpdateEvent(task_id=self.task_id, context_id=self.context_id,
                                           status=a2a.TaskStatus(state=state))  # fmt: skip
        if text := _ending_text(record):
            update.status.message.CopyFrom(agent_message(text, self.task_id, self.context_id))
        update.metadata.update({"smolmesh": _run_metadata(record)})
        return update

    @property
    def over(self) -> bool:
        return self.last_state in TERMINAL

    @property
    def paused(self) -> bool:
        return self.last_state in INTERRUPTED

    def _ending(self, finished: pb.RunFinished, event: pb.RunEvent) -> a2a.TaskStatusUpdateEvent:
        if not finished.HasField("error"):
            state, text = a2a.TASK_STATE_COMPLETED, ""
        else:
            state = (a2a.TASK_STATE_CANCELED if finished.error.reason in _STOPPED
                     else a2a.TASK_STATE_FAILED)  # fmt: skip
            text = f"{finished.error.reason}: {finished.error.message}"
        update = self._status(state, text, event)
        update.metadata.update({"smolmesh": {
            "usage": {"input_tokens": finished.usage.input_tokens,
                      "output_tokens": finished.usage.output_tokens},
            "duration_s": seconds_from_proto(finished.duration),
            "steps": finished.steps,
        }})  # fmt: skip
        return update

    def _status(self, state: a2a.TaskState, text: str, event: pb.RunEvent
                ) -> a2a.TaskStatusUpdateEvent:  # fmt: skip
        self.last_state = state
        status = a2a.TaskStatus(state=state)
        status.timestamp.CopyFrom(event.time)
        if text:
            message = agent_message(text, self.task_id, self.context_id,
                                    f"{self.task_id}:{event.index}")  # fmt: skip
            message.metadata.update({"smolmesh": {
                "event": event.WhichOneof("kind") or "", "agent": event.agent,
                "run_id": event.run_id, "parent_run_id": event.parent_run_id,
                "depth": event.depth, "step": event.step,
            }})  # fmt: skip
            status.message.CopyFrom(message)
        return a2a.TaskStatusUpdateEvent(task_id=self.task_id, context_id=self.context_id,
                                          status=status)  # fmt: skip


# ---------------------------------------------------------------- messages -> runs


class ContentTypeError(InvalidRequestError):
    """A part this agent cannot read (A2A's ContentTypeNotSupportedError)."""


@dataclass(frozen=True)
class RunInput:
    """What an A2A message asks of a run: the task (its text parts), the values beside it
    (its data parts, merged) and the images it shows (its image file parts)."""

    task: str
    additional_args: dict[str, Any]
    images: tuple[Image, ...]
    metadata: dict[str, str]


def run_input(message: a2a.Message, taken: Callable[[], Iterable[str]] = tuple) -> RunInput:
    """The run request of ``message``; InvalidRequestError (or ContentTypeError) otherwise.
    ``taken``: the names a value beside the task may not have (asked only if there are)."""
    if message.role != a2a.ROLE_USER:
        raise InvalidRequestError("a message to an agent has the role ROLE_USER")
    if not message.message_id or len(message.message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidRequestError(f"message_id must be 1 to {MAX_MESSAGE_ID_CHARS} characters")
    if not message.parts or len(message.parts) > MAX_PARTS:
        raise InvalidRequestError(f"a message has 1 to {MAX_PARTS} parts")
    texts: list[str] = []
    values: dict[str, Any] = {}
    images: list[Image] = []
    for number, part in enumerate(message.parts, 1):
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            value = json_format.MessageToDict(part.data)
            if not isinstance(value, dict):
                raise InvalidRequestError(f"part {number}: a data part is a JSON object "
                                          "(its keys name the values beside the task)")  # fmt: skip
            values.update(value)
        elif kind == "raw" and part.media_type in MEDIA_TYPES and len(images) < MAX_IMAGES:
            try:
                images.append(Image(part.media_type, part.raw))
            except InvalidRequestError as err:
                raise InvalidRequestError(f"part {number}: {err.message}") from None
        else:
            raise ContentTypeError(
                f"part {number}: this agent reads text, JSON data and images "
                f"({', '.join(MEDIA_TYPES)}) sent as bytes, not "
                f"{clip(part.media_type or kind or 'an empty part', 80)}"
            )
    task = "\n".join(t for t in texts if t.strip())
    if not task:
        raise InvalidRequestError("a message needs a text part: the task")
    args = args_from_json(json.dumps(values), taken()) if values else {}
    metadata = {"a2a.message_id": message.message_id}
    return RunInput(task, args, tuple(images), metadata)
