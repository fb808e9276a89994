"""``ToolCallingAgent``: the model acts through structured (JSON) tool calls.

Each step the model returns tool calls; each is validated and run, several
at once concurrently, and each result goes back as a tool message. Models
without native tool calling may write the calls as JSON in their text.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from mesh.agents.base import MultiStepAgent, RunState
from mesh.agents.memory import ActionStep, ToolCallRecord
from mesh.agents.parsing import parse_arguments, tool_calls_from_text
from mesh.agents.tool_runner import ToolRunner
from mesh.errors import ModelOutputError
from mesh.models.base import ChatMessage, ModelResponse, ToolCall
from mesh.tools.base import Tool
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["ToolCallingAgent"]

NO_TOOL_CALL = (
    "you did not call any tool. Call a tool, or call final_answer with your answer "
    '(argument "answer") to finish.'
)


class ToolCallingAgent(MultiStepAgent):
    template_name = "tool_calling_agent.j2"

    def _model_tools(self, toolbox: dict[str, Tool]) -> Sequence[Tool] | None:
        return list(toolbox.values())

    def _act(
        self, state: RunState, step: ActionStep, response: ModelResponse, tools: ToolRunner
    ) -> None:
        message = response.message
        calls = message.tool_calls or tool_calls_from_text(message.content, step.step_number)
        if not calls:
            raise ModelOutputError(NO_TOOL_CALL)
        calls = _with_unique_ids(calls, step.step_number)
        step.model_output = ChatMessage(role="assistant", content=message.content, tool_calls=calls)
        records = self._run_calls(calls, tools)
        step.tool_calls = records  # call order, not completion order
        step.observation = "\n".join(f"{r.name}: {r.observation}" for r in records)
        final = next((r for r in records if r.name == FINAL_ANSWER and r.error is None), None)
        if final is not None:
            step.is_final, step.final_answer = True, final.result

    def _run_calls(self, calls: tuple[ToolCall, ...], tools: ToolRunner) -> list[ToolCallRecord]:
        if len(calls) == 1:
            return [self._run_call(calls[0], tools)]
        workers = min(len(calls), self.max_parallel)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tool") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, self._run_call, call, tools)
                for call in calls
            ]
            return [future.result() for future in futures]

    @staticmethod
    def _run_call(call: ToolCall, tools: ToolRunner) -> ToolCallRecord:
        try:
            arguments = parse_arguments(call)
        except ModelOutputError as err:
            return tools.fail(call.id, call.name, err)
        return tools.invoke(call.id, call.name, kwargs=arguments)

    def _step_messages(self, step: ActionStep) -> list[ChatMessage]:
        messages = []
        if step.model_output is not None:
            messages.append(step.model_output)
        by_id = {record.call_id: record for record in step.tool_calls}
        for call in step.model_output.tool_calls if step.model_output else ():
            record = by_id.get(call.id)
            content = record.observation if record else "Error: the call was not run."
            messages.append(ChatMessage(role="tool", content=content, tool_call_id=call.id))
        messages.extend(step.images_message())  # after the tool messages: they hold text only
        if step.error is not None:
            messages.append(self._error_message(step))
        return messages


def _with_unique_ids(calls: Sequence[ToolCall], step: int) -> tuple[ToolCall, ...]:
    seen: set[str] = set()
    unique = []
    for n, call in enumerate(calls):
        call_id = call.id if call.id and call.id not in seen else f"call_{step}_{n}"
        seen.add(call_id)
        unique.append(ToolCall(id=call_id, name=call.name, arguments=call.arguments))
    return tuple(unique)
