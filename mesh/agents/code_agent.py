"""``CodeAgent``: the model acts by writing Python that runs in an executor.

Each step the model answers with reasoning and a code block (or, with
``use_structured_outputs_internally``, a JSON object holding both: see
``structured_code``); the code runs in the run's executor, where tools and
managed agents are plain functions; what it prints (and its last expression)
is the observation. The executor is chosen by name and lives exactly as long
as one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mesh.agents.base import MultiStepAgent, RunState
from mesh.agents.events import CodeAction
from mesh.agents.memory import ActionStep
from mesh.agents.parsing import extract_code
from mesh.agents.run_args import assignments
from mesh.agents.structured_code import read_answer, response_format
from mesh.agents.tool_runner import ToolRunner
from mesh.errors import CodeError, ConfigError, ErrorInfo, ExecutorError, ToolNotFoundError
from mesh.models.base import ChatMessage, Model, ModelResponse
from mesh.sandbox.base import ExecutionResult, Executor
from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.snippet import DEFAULT_AUTHORIZED_IMPORTS
from mesh.telemetry.spans import record_error, sandbox_span
from mesh.text import clip
from mesh.tools.base import Tool
from mesh.tools.untrusted import fence_output

__all__ = ["EXECUTORS", "CodeAgent"]

ExecutorFactory = Callable[["CodeAgent"], Executor]


def _nsjail(agent: CodeAgent) -> Executor:
    from mesh.sandbox.nsjail_executor import NsjailExecutor

    return NsjailExecutor(agent.sandbox, agent.authorized_imports)


def _unsafe_local(agent: CodeAgent) -> Executor:
    from mesh.sandbox.local import UnsafeLocalExecutor

    return UnsafeLocalExecutor(authorized_imports=agent.authorized_imports)


EXECUTORS: dict[str, ExecutorFactory] = {"nsjail": _nsjail, "unsafe-local": _unsafe_local}
"""Executors by name. Only ``nsjail`` isolates the code; it is the default."""


class CodeAgent(MultiStepAgent):
    template_name = "code_agent.j2"
    offers_run_parallel = True
    args_as_variables = True

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        model: Model | None = None,
        *,
        executor: str | ExecutorFactory = "nsjail",
        additional_authorized_imports: Iterable[str] = (),
        sandbox: SandboxConfig | None = None,
        use_structured_outputs_internally: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(tools, model, **kwargs)
        self.use_structured_outputs_internally = use_structured_outputs_internally
        """Ask the model for JSON ``{"thought", "code"}`` (a ``response_format``) instead of
        free text with a code block: for models that support structured outputs."""
        self.authorized_imports = sorted(
            {*DEFAULT_AUTHORIZED_IMPORTS, *additional_authorized_imports}
        )
        self.sandbox = sandbox or SandboxConfig()
        self.executor_factory = self._resolve_executor(executor)
        if executor == "nsjail":
            from mesh.sandbox.zygotes import zygote_for

            # The start-up check (fail now, loudly, if the jail cannot run), and the zygote warm.
            zygote_for(self.sandbox, self.authorized_imports)

    @staticmethod
    def _resolve_executor(executor: str | ExecutorFactory) -> ExecutorFactory:
        if callable(executor):
            return executor
        if executor not in EXECUTORS:
            available = ", ".join(sorted(EXECUTORS))
            raise ConfigError(f"unknown executor {executor!r} (available: {available})")
        return EXECUTORS[executor]

    def _open_run(self, state: RunState) -> None:
        executor = self.executor_factory(self)
        state.resources["executor"] = executor
        state.ctx.on_cancel(executor.close)  # cancellation kills the jail mid-snippet
        if state.additional_args:  # the caller's values, as variables of the model's code
            result = executor.run(assignments(state.additional_args), _NoTools())
            if result.error is not None:
                raise ExecutorError(
                    f"the run's additional_args could not be set: {clip(result.error, 300)}"
                )

    def _close_run(self, state: RunState) -> None:
        executor: Executor | None = state.resources.pop("executor", None)
        if executor is not None:
            executor.close()

    def _prompt_values(self) -> dict[str, Any]:
        imports = (
            "any module" if "*" in self.authorized_imports else ", ".join(self.authorized_imports)
        )
        return {
            "authorized_imports": imports,
            "structured_outputs": self.use_structured_outputs_internally,
        }

    def _stop_sequences(self) -> Sequence[str] | None:
        # A JSON answer may quote "Observation:" in its strings; cutting it there breaks it.
        return None if self.use_structured_outputs_internally else ["Observation:"]

    def _response_format(self) -> Mapping[str, Any] | None:
        return response_format() if self.use_structured_outputs_internally else None

    def _act(
        self, state: RunState, step: ActionStep, response: ModelResponse, tools: ToolRunner
    ) -> None:
        text = response.message.content  # kept as it came: the model reads its thought back
        step.code = (
            read_answer(text).code if self.use_structured_outputs_internally else extract_code(text)
        )
        state.ctx.report(CodeAction, step.step_number, code=step.code)
        executor: Executor = state.resources["executor"]
        with sandbox_span(type(executor).__name__, step.code) as span:
            result = executor.run(step.code, tools)
            if result.error is not None:
                record_error(span, ErrorInfo.of(CodeError(result.error)))
        if result.is_final:
            step.is_final, step.final_answer = True, result.final_answer
        observation = format_observation(result)
        if observation and (untrusted := tools.untrusted_called()):  # printed from their results
            observation = fence_output(observation, untrusted)
        if result.error is not None:  # the model reads all of it: what ran, then what failed
            step.fail(ErrorInfo.of(CodeError(observation)))
        elif observation or not result.is_final:
            step.observation = observation or "The code ran and printed nothing."

    def _step_messages(self, step: ActionStep) -> list[ChatMessage]:
        messages = []
        if step.model_output is not None:
            messages.append(ChatMessage(role="assistant", content=step.model_output.content))
        if step.error is not None:
            messages.append(self._error_message(step))
        elif step.observation is not None:
            messages.append(ChatMessage(role="user", content=f"Observation:\n{step.observation}"))
        messages.extend(step.images_message())  # images its tools returned (the code got text)
        return messages


def format_observation(result: ExecutionResult) -> str:
    parts = []
    if result.note:
        parts.append(f"Note: {result.note}")
    if result.output:
        parts.append(f"Execution logs:\n{result.output.rstrip()}")
    if result.error is not None:
        parts.append(f"Code failed:\n{result.error}")
    elif result.value is not None:
        parts.append(f"Last output from code snippet:\n{result.value}")
    return "\n".join(parts)


class _NoTools:
    """The bridge of the snippet that sets a run's additional_args: it calls nothing."""

    def tool_names(self) -> Sequence[str]:
        return ()

    def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        raise ToolNotFoundError(name)
