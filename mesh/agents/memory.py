"""What a run remembers: its task, the conversation before it, and each step, in full.

Each step keeps the exact model input and output, the code or tool calls,
observations, errors, timings and token usage: enough to rebuild the
conversation, audit the run, or explain a bill.

A memory goes to JSON and back whole (``to_json`` / ``from_json``): to keep
a run, look at it elsewhere, or load one to replay it. Values that are not
JSON (an answer that is a tuple, a tool's object) are kept as their repr
with a marker (see ``memory_codec``), so a memory read back writes the very
JSON it was read from. ``to_messages`` gives the run as the chat messages
the model read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh import untrusted_json
from mesh.agents.conversation import Turn
from mesh.agents.memory_codec import (
    Fields,
    error_dict,
    error_of,
    exception_of,
    images_of,
    json_safe,
    message_of,
    restored,
    usage_of,
)
from mesh.agents.planning import PlanningStep
from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo, MeshError
from mesh.models.base import ChatMessage, TokenUsage
from mesh.models.images import MAX_IMAGES, MAX_IMAGES_BYTES, Image, fits

__all__ = ["MAX_MEMORY_JSON_BYTES", "ActionStep", "AgentMemory", "ToolCallRecord"]

FORMAT = "smolmesh.memory"
VERSION = 1
MAX_MEMORY_JSON_BYTES = 64 * 1024 * 1024
"""``from_json`` refuses more: a run's memory is megabytes at most, and a parse holds
several times its text in memory."""


@dataclass
class ToolCallRecord:
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0
    exception: MeshError | None = field(default=None, repr=False, compare=False)

    @property
    def observation(self) -> str:
        return f"Error: {self.error}" if self.error is not None else _text(self.result)

    @property
    def error_info(self) -> ErrorInfo | None:
        """The error as data, for events; ``error`` is the text the model reads. A call
        ended by something other than a MeshError (a bug) is ``internal``."""
        if self.error is None:
            return None
        if self.exception is not None:
            return ErrorInfo.of(self.exception)
        return ErrorInfo("internal", self.error)

    def to_dict(self) -> dict[str, Any]:
        arguments = {name: json_safe(value) for name, value in self.arguments.items()}
        return {
            "call_id": self.call_id,
            "name": self.name,
            "arguments": arguments,
            "result": json_safe(self.result),
            "error": self.error,
            "error_info": error_dict(self.error_info),
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, data: Any, what: str = "a tool call") -> ToolCallRecord:
        fields = Fields(data, what)
        arguments = restored(fields.value("arguments"))
        if not isinstance(arguments, dict):
            raise ValueError(f"{what}'s 'arguments' must be a JSON object")
        record = cls(fields.text("call_id"), fields.text("name"), arguments,
                     restored(fields.value("result")), fields.optional_text("error"),
                     fields.number("duration_s"))  # fmt: skip
        info = error_of(fields.value("error_info"), f"{what}'s error")
        if (info is None) != (record.error is None):
            raise ValueError(f"{what} has an 'error' and 'error_info' both or neither")
        if info is not None and info != record.error_info:  # the error came as an exception
            record.exception = exception_of(info)
        return record


@dataclass
class ActionStep:
    step_number: int
    start_time: float
    end_time: float | None = None
    model_input: list[ChatMessage] = field(default_factory=list)
    model_output: ChatMessage | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = 0.0
    code: str | None = None
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    observation: str | None = None
    error: str | None = None
    """What the model reads about the step's failure (set with ``fail``)."""
    error_info: ErrorInfo | None = None
    """The same failure as data, for events and spans."""
    is_final: bool = False
    final_answer: Any = None
    observation_images: list[Image] = field(default_factory=list)
    """Images the step's tools returned, shown to the model at the next step (within the
    limits of ``mesh.models.images``: ``keep_image``)."""
    images_dropped: int = 0
    """Images the step's tools returned beyond those limits: not shown (the model is told)."""

    @property
    def duration_s(self) -> float:
        return 0.0 if self.end_time is None else self.end_time - self.start_time

    def keep_image(self, image: Image) -> str:
        """Keep ``image`` to show the model, if it fits the step's limits; the text that
        stands for it (a tool's result as the model and a code agent's code read it)."""
        if fits(self.observation_images, image):
            self.observation_images.append(image)
            return f"[{image.summary}: shown below]"
        self.images_dropped += 1
        return (f"[{image.summary}: not shown: a step shows at most {MAX_IMAGES} images, "
                f"{MAX_IMAGES_BYTES // 2**20} MiB in all]")  # fmt: skip

    def images_message(self) -> list[ChatMessage]:
        """The user message that shows the step's images after its observation (a tool
        message cannot hold images); none when its tools returned none."""
        if not self.observation_images and not self.images_dropped:
            return []
        text = f"The images the tools returned at step {self.step_number}"
        if self.images_dropped:
            text += f" ({self.images_dropped} more not shown: over the limits)"
        return [ChatMessage(role="user", content=text + ":", images=tuple(self.observation_images))]

    def fail(self, error: ErrorInfo) -> None:
        """The step failed with ``error``; the model reads its message."""
        self.error, self.error_info = error.message, error

    def to_dict(self) -> dict[str, Any]:
        output = self.model_output
        return {
            "step_number": self.step_number,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "model_input": [message.to_dict(image_data=False) for message in self.model_input],
            "model_output": output.to_dict() if output is not None else None,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "code": self.code,
            "tool_calls": [record.to_dict() for record in self.tool_calls],
            "observation": self.observation,
            "error": self.error,
            "error_info": error_dict(self.error_info),
            "is_final": self.is_final,
            "final_answer": json_safe(self.final_answer),
            "observation_images": [image.to_dict() for image in self.observation_images],
            "images_dropped": self.images_dropped,
        }

    @classmethod
    def from_dict(
        cls, data: Any, what: str = "a step", known: Mapping[str, Image] | None = None
    ) -> ActionStep:
        """``known``: the memory's images by sha256, which its model input shows by digest."""
        fields = Fields(data, what)
        calls = fields.items("tool_calls")
        return cls(
            **_model_call_of(fields, what, known),
            code=fields.optional_text("code"),
            tool_calls=[ToolCallRecord.from_dict(c, f"tool call {n} of {what}")
                        for n, c in enumerate(calls, 1)],
            observation=fields.optional_text("observation"),
            error=fields.optional_text("error"),
            error_info=error_of(fields.value("error_info"), f"{what}'s error"),
            is_final=fields.flag("is_final"),
            final_answer=restored(fields.value("final_answer")),
            observation_images=list(images_of(data.get("observation_images", []), what)),
            images_dropped=fields.count("images_dropped") if "images_dropped" in data else 0,
        )  # fmt: skip


@dataclass
class AgentMemory:
    system_prompt: str
    task: str
    steps: list[ActionStep] = field(default_factory=list)
    task_images: tuple[Image, ...] = ()
    """The images the task came with (``run(task, images=...)``), shown with it."""
    history: list[Turn] = field(default_factory=list)
    """The earlier turns of the conversation the model read before the task (see
    ``conversation``)."""
    turn: Turn | None = None
    """This run as a turn, once it ended with an answer: what a later run continues from."""
    plans: list[PlanningStep] = field(default_factory=list)
    """The plans the agent wrote (``planning_interval``), each before the step it names."""

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for step in self._model_steps():
            total = total + step.usage
        return total

    @property
    def agent_usage(self) -> AgentUsage:
        """This run's own model calls (plans too), tokens and cost (None if a price was
        unknown)."""
        calls = [step for step in self._model_steps() if step.model_output is not None]
        costs = [step.cost_usd for step in calls]
        cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        return AgentUsage(self.usage, cost, len(calls))

    def _model_steps(self) -> list[ActionStep | PlanningStep]:
        """What made model calls: the steps and the plans."""
        return [*self.steps, *self.plans]

    def return_full_code(self) -> str:
        """Every code step's code, in order, as one script (smolagents' name)."""
        return "\n\n".join(step.code for step in self.steps if step.code)

    def get_full_steps(self) -> list[dict[str, Any]]:
        """Every step as JSON data (smolagents' name; ``to_dict`` has the whole memory)."""
        return [step.to_dict() for step in self.steps]

    @property
    def final_step(self) -> ActionStep | None:
        """The step that gave the final answer; None while there is none."""
        return next((step for step in reversed(self.steps) if step.is_final), None)

    def to_messages(
        self, step_messages: Callable[[ActionStep], list[ChatMessage]] | None = None
    ) -> list[ChatMessage]:
        """The run as the chat messages the model read: what its last model call read (the
        system prompt, the earlier turns, the task, and every earlier step, each as its
        agent kind wrote it for the model), then that last step. How a step reads depends
        on the agent kind: with ``step_messages`` (the agent's) the last step is all of it,
        its output and its observation or error; without, it is its model output only.
        Empty before the first model call."""
        for step in reversed(self.steps):
            if step.model_input:
                break
        else:
            return []
        answered = step.model_output is not None or step.error is not None
        if step_messages is not None and answered:
            return [*step.model_input, *step_messages(step)]
        output = [step.model_output] if step.model_output is not None else []
        return [*step.model_input, *output]

    def to_dict(self) -> dict[str, Any]:
        """Everything in the memory, as JSON data; ``usage`` and ``final_answer`` are there
        for readers (they are computed from the steps, and not read back)."""
        usage = self.agent_usage
        final = self.final_step
        return {
            "format": FORMAT,
            "version": VERSION,
            "task": self.task,
            "task_images": [image.to_dict() for image in self.task_images],
            "system_prompt": self.system_prompt,
            "history": [_turn_dict(turn) for turn in self.history],
            "steps": [step.to_dict() for step in self.steps],
            "plans": [_plan_dict(plan) for plan in self.plans],
            "turn": _turn_dict(self.turn) if self.turn is not None else None,
            "final_answer": json_safe(final.final_answer) if final is not None else None,
            "usage": {
                **usage.tokens.to_dict(),
                "cost_usd": usage.cost_usd,
                "model_calls": usage.model_calls,
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> AgentMemory:
        """The memory ``to_dict`` wrote; ValueError, naming the field, for anything else."""
        fields = Fields(data, "a memory")
        if fields.value("format") != FORMAT or fields.value("version") != VERSION:
            raise ValueError(f"not a memory of this version ({FORMAT!r} version {VERSION})")
        turn = fields.value("turn")
        task_images = images_of(fields.data.get("task_images", []), "the task")
        known = _images_by_digest(task_images, fields.items("steps"))
        return cls(
            system_prompt=fields.text("system_prompt"),
            task=fields.text("task"),
            task_images=task_images,
            steps=[ActionStep.from_dict(step, f"step {n}", known)
                   for n, step in enumerate(fields.items("steps"), 1)],
            history=[_turn_of(t, f"earlier turn {n}")
                     for n, t in enumerate(fields.items("history"), 1)],
            turn=None if turn is None else _turn_of(turn, "the run's turn"),
            plans=[_plan_of(plan, f"plan {n}", known)
                   for n, plan in enumerate(fields.items("plans"), 1)],
        )  # fmt: skip

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> AgentMemory:
        """The memory ``to_json`` wrote. ValueError for anything else, and for more than
        ``MAX_MEMORY_JSON_BYTES`` (of UTF-8) before reading any of it."""
        if _size_over(text, MAX_MEMORY_JSON_BYTES):
            raise ValueError(
                f"a memory's JSON is at most {MAX_MEMORY_JSON_BYTES // 2**20} MiB; this is more"
            )
        try:
            data = untrusted_json.loads(text)
        except ValueError as err:  # also nested too deeply, and bytes that are not UTF-8
            raise ValueError(f"a memory's JSON does not parse: {err}") from None
        return cls.from_dict(data)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _turn_dict(turn: Turn) -> dict[str, Any]:
    """A turn in the form its own ``to_json`` writes (one format for a turn, wherever kept)."""
    data: dict[str, Any] = json.loads(turn.to_json())
    return data


def _turn_of(data: Any, what: str) -> Turn:
    try:
        return Turn.from_json(json.dumps(data))
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _images_by_digest(task_images: Sequence[Image], steps: Sequence[Any]) -> dict[str, Image]:
    """Every image whose bytes a memory's JSON holds (its task's and its tools'), by sha256."""
    images = list(task_images)
    for n, step in enumerate(steps, 1):
        if isinstance(step, Mapping):
            images += images_of(step.get("observation_images", []), f"step {n}")
    return {image.sha256: image for image in images}


def _plan_dict(plan: PlanningStep) -> dict[str, Any]:
    output = plan.model_output
    return {
        "step_number": plan.step_number,
        "initial": plan.initial,
        "start_time": plan.start_time,
        "end_time": plan.end_time,
        "model_input": [message.to_dict(image_data=False) for message in plan.model_input],
        "model_output": output.to_dict() if output is not None else None,
        "plan": plan.plan,
        "usage": plan.usage.to_dict(),
        "cost_usd": plan.cost_usd,
    }


def _plan_of(data: Any, what: str, known: Mapping[str, Image]) -> PlanningStep:
    fields = Fields(data, what)
    return PlanningStep(**_model_call_of(fields, what, known), initial=fields.flag("initial"),
                        plan=fields.text("plan"))  # fmt: skip


def _model_call_of(
    fields: Fields, what: str, known: Mapping[str, Image] | None = None
) -> dict[str, Any]:
    """What a step and a plan both hold: their number, times and model call."""
    output = fields.value("model_output")
    return {
        "step_number": fields.count("step_number"),
        "start_time": fields.number("start_time"),
        "end_time": fields.optional_number("end_time"),
        "model_input": [message_of(m, f"a model input message of {what}", known)
                        for m in fields.items("model_input")],
        "model_output": None if output is None else message_of(output, f"{what}'s output"),
        "usage": usage_of(fields.value("usage"), f"{what}'s usage"),
        "cost_usd": fields.optional_number("cost_usd"),
    }  # fmt: skip


def _size_over(text: str | bytes, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` bytes of UTF-8; a string is encoded only when its
    length alone cannot tell (a character is one to four bytes)."""
    if isinstance(text, bytes) or len(text) > limit:
        return len(text) > limit
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
