"""Asking the user: a run that waits for an answer only its caller has.

smolagents' ``UserInputTool`` reads a console. A served run has no console:
its caller answers instead, when it speaks a protocol that can (A2A's
``input-required`` state, then a message on the same task). The run keeps
its thread, its jail and its deadline while it waits, so a question is a
pause in one run, not the end of one run and the start of another, and
cancelling the run, or its deadline, ends the wait like any other.

Only a run started by a caller that can answer has an ``InputChannel``;
without one the tool fails at once with an error the model reads, instead
of waiting for an answer nobody can give.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from mesh.agents.context import RunContext, active_run
from mesh.agents.events import InputRequested
from mesh.errors import InvalidRequestError, ToolExecutionError
from mesh.text import clip
from mesh.tools.base import Tool

__all__ = ["MAX_ANSWER_CHARS", "MAX_QUESTION_CHARS", "InputChannel", "UserInputTool"]

MAX_QUESTION_CHARS = 4_000
MAX_ANSWER_CHARS = 100_000
_WAKE_S = 1.0
"""How often a waiting run looks at its deadline (cancellation wakes it at once)."""


class InputChannel:
    """One run's questions to its caller and the caller's answers, one at a time.

    The run's thread waits in ``ask``; the service's loop calls ``answer``. The answer may
    come with the caller's request metadata, which replaces the run's (``RunContext.metadata``):
    what the caller said when it answered is what the run now sees.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._question: str | None = None
        self._answer: str | None = None
        self._metadata: Mapping[str, str] | None = None

    @property
    def question(self) -> str | None:
        """The question waiting for an answer (None: the run is not waiting)."""
        with self._lock:
            return self._question

    def ask(self, run: RunContext, question: str) -> str:
        """Report the question, then wait for the answer, the run's cancellation or its
        deadline (which raise as ``pause`` does)."""
        question = clip(question, MAX_QUESTION_CHARS)
        with self._lock:
            if self._question is not None:
                raise ToolExecutionError("a question is already waiting for its answer")
            self._question, self._answer = question, None
            self._arrived.clear()
        forget = run.on_cancel(self._arrived.set)
        try:
            run.report(InputRequested, question=question)
            while not self._arrived.wait(_wait_s(run)):
                run.raise_if_cancelled()
            run.raise_if_cancelled()
            with self._lock:
                answer, metadata = self._answer, self._metadata
            assert answer is not None
            if metadata is not None:
                run.metadata = dict(metadata)
            return answer
        finally:
            forget()
            with self._lock:
                self._question = None

    def answer(self, text: str, metadata: Mapping[str, str] | None = None) -> None:
        """Give the waiting run its answer; InvalidRequestError if it is not waiting."""
        if len(text) > MAX_ANSWER_CHARS:
            raise InvalidRequestError(f"an answer is longer than {MAX_ANSWER_CHARS} characters")
        with self._lock:
            if self._question is None or self._arrived.is_set():
                raise InvalidRequestError("the run is not waiting for input")
            self._answer, self._metadata = text, metadata
            self._arrived.set()


def _wait_s(run: RunContext) -> float:
    remaining = run.remaining()
    return _WAKE_S if remaining is None else max(0.0, min(_WAKE_S, remaining))


class UserInputTool(Tool):
    """smolagents' ``user_input``: the question goes to the run's caller (see the module)."""

    name = "user_input"
    description = (
        "Asks the user a question and returns their answer. Use it only when you cannot go "
        "on without information that only the user has."
    )
    inputs = {"question": {"type": "string", "description": "The question to ask the user."}}
    output_type = "string"

    def forward(self, question: str) -> str:
        run = active_run()
        channel = run.inputs if run is not None else None
        if run is None or channel is None:
            raise ToolExecutionError(
                "no user can answer here: this run's caller cannot be asked for input; "
                "go on with what you have"
            )
        return channel.ask(run, question)
