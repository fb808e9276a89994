"""User code the loop calls at fixed points: step callbacks and final-answer checks.

As in smolagents: ``step_callbacks`` is a list (called for every step) or keyed by the kind
of step (``ActionStep``, ``PlanningStep``, ``FinalAnswerStep``), each a callback or a list
of them, called as ``callback(step, agent=agent)``, or ``callback(step)`` when it takes one
parameter. ``final_answer_checks`` are called as ``check(answer, memory, agent=agent)`` (or
without ``agent``) and return whether the answer may end the run.

A callback watches the run; it must not end it. One that raises is logged (its error's type
and message, clipped) and the run goes on; the rest of the callbacks still run. A check that
raises rejects the answer, as one that returns False does: the model reads why, and the run
goes on until an answer passes or the steps run out.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.errors import ConfigError
from mesh.text import clip

__all__ = ["FinalAnswerStep", "StepCallbacks", "rejection"]

log = logging.getLogger("mesh.agents")

MAX_REASON_CHARS = 500
StepCallback = Callable[..., Any]
FinalAnswerCheck = Callable[..., Any]


@dataclass(frozen=True)
class FinalAnswerStep:
    """What callbacks of the final answer receive: the answer the run ends with."""

    output: Any


class StepCallbacks:
    """The callbacks of an agent, by the kind of step they watch (``object``: every kind)."""

    def __init__(
        self,
        callbacks: Iterable[StepCallback] | Mapping[type, StepCallback | Iterable[StepCallback]]
        | None = None,
    ) -> None:  # fmt: skip
        self.by_kind: dict[type, list[StepCallback]] = {}
        if callbacks is None:
            return
        if isinstance(callbacks, Mapping):
            for kind, chosen in callbacks.items():
                if not isinstance(kind, type):
                    raise ConfigError(f"step_callbacks keys are step classes, not {kind!r}")
                self.by_kind[kind] = _callables([chosen] if callable(chosen) else list(chosen))
        else:
            self.by_kind[object] = _callables(list(callbacks))

    def __call__(self, step: Any, agent: Any) -> None:
        """Call every callback that watches ``step``'s kind, in order; none can stop the run."""
        for kind, callbacks in self.by_kind.items():
            if isinstance(step, kind):
                for callback in callbacks:
                    _call_safely(callback, step, agent)

    def __bool__(self) -> bool:
        return any(self.by_kind.values())


def rejection(
    checks: Iterable[FinalAnswerCheck], answer: Any, memory: Any, agent: Any
) -> str | None:
    """Why the first check that fails rejects ``answer`` (what the model reads), or None."""
    for check in checks:
        name = _name(check)
        try:
            passed = check(answer, memory, agent=agent) if _takes_agent(check) else check(
                answer, memory)  # fmt: skip
        except Exception as err:  # the user's check: its failure is a rejection, not a crash
            reason = clip(f"{type(err).__name__}: {err}", MAX_REASON_CHARS, one_line=True)
            return f"The final answer was rejected: the check {name} failed ({reason})."
        if not passed:
            return f"The final answer was rejected by the check {name}."
    return None


def _callables(items: list[Any]) -> list[StepCallback]:
    for item in items:
        if not callable(item):
            raise ConfigError(f"a step callback must be callable, not {item!r}")
    return items


def _call_safely(callback: StepCallback, step: Any, agent: Any) -> None:
    try:
        if _parameters(callback) == 1:  # smolagents' rule: one parameter, the step alone
            callback(step)
        else:
            callback(step, agent=agent)
    except Exception as err:  # the user's callback: logged, never the run's end
        reason = clip(f"{type(err).__name__}: {err}", MAX_REASON_CHARS, one_line=True)
        log.warning("step callback %s failed on %s: %s", _name(callback), type(step).__name__,
                    reason)  # fmt: skip


def _parameters(function: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return 1


def _takes_agent(function: Callable[..., Any]) -> bool:
    """Whether ``function`` accepts ``agent=`` (smolagents' newer signature)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return "agent" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _name(function: Callable[..., Any]) -> str:
    return clip(getattr(function, "__name__", type(function).__name__), 100)
