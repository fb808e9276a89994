"""One A2A task as it goes: what the caller's stream shows of it, and what it came to.

An A2A task is not a mesh run, so its updates are shown with the closest
events we have, reported under the child run that stands for the task
(``RunContext.report``: one level below the caller): its status messages
and artifacts as ``Observation``s, and its end as the child's
``FinalAnswer`` and ``RunFinished`` (written by ``A2AAgent``). The same
relay reads a stream (``take``) or the task as ``GetTask`` returns it
(``take_task``), so streaming and polling show the same thing.

Everything here comes from a server we do not control: what is relayed is
clipped (``MAX_RELAYED_CHARS`` per event, at most ``MAX_RELAYED_EVENTS``),
the answer kept is at most ``MAX_ANSWER_BYTES`` (beyond, the call fails),
and an error quotes at most ``MAX_QUOTE_CHARS`` of what the agent said.

The answer: the task's artifacts (a single data part is its JSON value, a
single file part a ``File``'s JSON; otherwise their text, joined), or
failing that the final status message, or the message the agent answered
with instead of a task.
"""

from __future__ import annotations

import json
from typing import Any

from a2a.types import a2a_pb2 as a2a
from google.protobuf.json_format import MessageToDict

from mesh.agents.context import RunContext
from mesh.agents.events import Observation
from mesh.errors import InvalidRequestError, RemoteAgentError
from mesh.files import File
from mesh.text import clip

__all__ = ["INTERRUPTED", "MAX_ANSWER_BYTES", "TERMINAL", "TaskRelay", "answer_of"]

MAX_ANSWER_BYTES = 1 << 20
MAX_RELAYED_CHARS = 2000
MAX_RELAYED_EVENTS = 500
MAX_QUOTE_CHARS = 500
MAX_ARTIFACTS = 256

S = a2a.TaskState
TERMINAL = frozenset({S.TASK_STATE_COMPLETED, S.TASK_STATE_FAILED, S.TASK_STATE_CANCELED,
                      S.TASK_STATE_REJECTED})  # fmt: skip
INTERRUPTED = frozenset({S.TASK_STATE_INPUT_REQUIRED, S.TASK_STATE_AUTH_REQUIRED})
"""States in which the task waits for its caller: the call is over for us."""


class TaskRelay:
    """Follows one task: relays its updates into ``run``'s stream and keeps its outcome."""

    def __init__(self, run: RunContext, agent: str) -> None:
        self.run = run
        self.agent = agent
        self.task_id = ""
        self.state: int = S.TASK_STATE_UNSPECIFIED
        self.steps = 0
        """Updates relayed (the child run's ``steps``)."""
        self._status: a2a.Message | None = None
        """The message of the task's current status, if it has one."""
        self._reply: a2a.Message | None = None
        self._artifacts: dict[str, list[a2a.Part]] = {}
        self._sizes: dict[str, int] = {}

    @property
    def settled(self) -> bool:
        """Whether the task reached an end, or waits for input: nothing more will come."""
        return self._reply is not None or self.state in TERMINAL | INTERRUPTED

    def take(self, response: a2a.StreamResponse) -> None:
        """One message of a ``SendStreamingMessage`` stream (or a ``SendMessage`` reply)."""
        kind = response.WhichOneof("payload")
        if kind == "task":
            self.take_task(response.task)
        elif kind == "status_update":
            self._learn(response.status_update.task_id)
            self._take_status(response.status_update.status)
        elif kind == "artifact_update":
            update = response.artifact_update
            self._learn(update.task_id)
            self._take_artifact(update.artifact, append=update.append)
        elif kind == "message":
            self._reply = response.message
            self._check_size(response.message.ByteSize())

    def take_task(self, task: a2a.Task) -> None:
        """The whole task (the stream's first message, or what ``GetTask`` returns):
        relay what changed since it was last seen."""
        self._learn(task.id)
        for artifact in task.artifacts[: MAX_ARTIFACTS + 1]:
            known = self._artifacts.get(artifact.artifact_id)
            if known is None or len(known) != len(artifact.parts):
                self._take_artifact(artifact, append=False)
        self._take_status(task.status)

    def outcome(self) -> Any:
        """The answer of a task that completed; the error of one that did not."""
        if self._reply is not None:
            return answer_of(list(self._reply.parts))
        quote = _quote(self._status)
        if self.state == S.TASK_STATE_COMPLETED:
            parts = [part for parts in self._artifacts.values() for part in parts]
            return answer_of(parts or (list(self._status.parts) if self._status else []))
        if self.state == S.TASK_STATE_FAILED:
            raise RemoteAgentError(f"{self.agent} failed the task{quote}")
        if self.state == S.TASK_STATE_REJECTED:
            raise RemoteAgentError(f"{self.agent} rejected the task{quote}")
        if self.state == S.TASK_STATE_CANCELED:
            raise RemoteAgentError(f"{self.agent} cancelled the task itself{quote}")
        if self.state in INTERRUPTED:
            what = "input" if self.state == S.TASK_STATE_INPUT_REQUIRED else "authentication"
            raise RemoteAgentError(
                f"{self.agent} asked for {what} instead of answering{quote or ' (no question)'}"
                ". It cannot be answered: give it a complete, self-contained task instead."
            )
        raise RemoteAgentError(f"{self.agent} ended the call before its task finished "
                               f"(state: {_label(self.state)})")  # fmt: skip

    def _learn(self, task_id: str) -> None:
        if task_id and not self.task_id:
            self.task_id = task_id
            self._relay(f"A2A task {clip(task_id, 100)} started")

    def _take_status(self, status: a2a.TaskStatus) -> None:
        message = status.message if status.HasField("message") else None
        if status.state == self.state and (message is None or message == self._status):
            return  # nothing new (polling sees the same status again and again)
        self.state = status.state
        self._status = message  # the current status's message: the final one's is the answer
        if message is not None:
            self._check_size(message.ByteSize())
            if text := parts_text(list(message.parts)):
                self._relay(f"{_label(status.state)}: {text}")

    def _take_artifact(self, artifact: a2a.Artifact, *, append: bool) -> None:
        key = artifact.artifact_id
        if key not in self._artifacts and len(self._artifacts) >= MAX_ARTIFACTS:
            raise RemoteAgentError(f"{self.agent} sent over {MAX_ARTIFACTS} artifacts")
        size = sum(part.ByteSize() for part in artifact.parts)
        kept = self._sizes.get(key, 0) if append else 0
        self._check_size(size + kept - self._sizes.get(key, 0))
        parts = self._artifacts.get(key, []) if append else []
        self._artifacts[key] = [*parts, *artifact.parts]
        self._sizes[key] = kept + size
        name = clip(artifact.name or artifact.artifact_id, 80, one_line=True)
        self._relay(f"artifact {name}: {parts_text(list(artifact.parts))}")

    def _check_size(self, more: int) -> None:
        if sum(self._sizes.values()) + more > MAX_ANSWER_BYTES:
            raise RemoteAgentError(
                f"{self.agent} answered with over {MAX_ANSWER_BYTES // 1024} KiB: too much to keep"
            )

    def _relay(self, text: str) -> None:
        self.steps += 1
        if self.steps < MAX_RELAYED_EVENTS:
            self.run.report(Observation, step=self.steps, text=clip(text, MAX_RELAYED_CHARS))
        elif self.steps == MAX_RELAYED_EVENTS:
            self.run.report(Observation, step=self.steps,
                            text="(further updates of this task are not shown)")  # fmt: skip


def answer_of(parts: list[a2a.Part]) -> Any:
    """What ``parts`` say, as an answer (see the module docstring)."""
    if len(parts) == 1:
        part = parts[0]
        kind = part.WhichOneof("content")
        if kind == "data":
            return json_value(part.data)
        if kind in ("raw", "url"):
            try:
                return File(part.filename or "file", part.media_type or "application/octet-stream",
                            data=part.raw if kind == "raw" else None,
                            url=part.url if kind == "url" else None).to_json()  # fmt: skip
            except InvalidRequestError:
                pass  # not a file we can hold: shown as text
    return parts_text(parts)


def parts_text(parts: list[a2a.Part]) -> str:
    """The parts as text: text as it is, data as JSON, files as a note of what they are."""
    texts = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            texts.append(json.dumps(json_value(part.data), ensure_ascii=False))
        elif kind == "url":
            texts.append(f"[file {clip(part.filename, 100)} at {clip(part.url, 300)}]")
        elif kind == "raw":
            texts.append(f"[file {clip(part.filename, 100)} ({clip(part.media_type, 60)}, "
                         f"{len(part.raw)} bytes)]")  # fmt: skip
    return "\n".join(text for text in texts if text)


def json_value(value: Any) -> Any:
    """A ``google.protobuf.Value`` as JSON, its whole numbers as integers again (a Value
    holds every number as a double)."""
    return _whole(MessageToDict(value))


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    return value


def _quote(message: a2a.Message | None) -> str:
    text = parts_text(list(message.parts)) if message is not None else ""
    return f': "{clip(text, MAX_QUOTE_CHARS, one_line=True)}"' if text else ""


def _label(state: int) -> str:
    try:
        name = a2a.TaskState.Name(state)
    except ValueError:  # a state of a later protocol version
        return f"state {state}"
    return name.removeprefix("TASK_STATE_").lower().replace("_", " ")
