"""``MultiStepAgent``: the loop both agent kinds share.

Each step asks the model for the next action, lets the agent kind act on it
(run code, or call tools), and records everything in the run's memory until
a final answer or the step limit. The agent object holds configuration
(model, tools, prompt); each run gets its own context and memory, so one
agent can serve several runs at once.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from mesh.agents.answer_schema import AnswerSchema
from mesh.agents.budget import Budget
from mesh.agents.callbacks import (
    FinalAnswerCheck,
    FinalAnswerStep,
    StepCallback,
    StepCallbacks,
    rejection,
)
from mesh.agents.context import EventSink, RunContext, active_run
from mesh.agents.conversation import Turn, answer_text, keep_recent
from mesh.agents.events import (
    AgentEvent,
    FinalAnswer,
    ModelOutput,
    ModelOutputDelta,
    Observation,
    Planning,
    RunFinished,
    RunStarted,
    StepFailed,
)
from mesh.agents.fan_out import PARALLEL, ParallelCallsTool
from mesh.agents.managed import ManagedAgent, ManagedAgentTool
from mesh.agents.memory import ActionStep, AgentMemory
from mesh.agents.planning import PLAN_END, PlanningStep, due, plan_request, plan_text
from mesh.agents.prompts import render_prompt
from mesh.agents.replay import replay as print_replay
from mesh.agents.run_args import checked_args, described
from mesh.agents.tool_runner import ToolRunner
from mesh.agents.usage import AgentUsage, merge_usage
from mesh.errors import (
    ConfigError,
    ErrorInfo,
    InvalidRequestError,
    MaxStepsError,
    MeshError,
    ModelError,
    ModelOutputError,
)
from mesh.models.base import ChatMessage, Model, ModelResponse, TokenUsage, shared_prefix
from mesh.models.cost import cost_usd
from mesh.models.images import Image, ImageSource, checked_images
from mesh.run_scope import current_scope
from mesh.telemetry.spans import (
    agent_span,
    chat_span,
    current_trace_id,
    planning_span,
    record_error,
    record_response,
    step_span,
)
from mesh.tools.base import Tool
from mesh.tools.final_answer import FINAL_ANSWER, FinalAnswerTool

__all__ = ["MultiStepAgent", "RunResult"]

MAX_STEPS_PROMPT = (
    "You have reached the maximum number of steps. Based on everything above, give your "
    "best final answer to the task now, as plain text, without calling tools or writing code."
)
RETRY_HINT = "Now let's retry: take care not to repeat previous errors!"


@dataclass(frozen=True)
class RunResult:
    output: Any
    state: Literal["success", "max_steps"]
    run_id: str
    steps: list[ActionStep] = field(repr=False)
    usage: TokenUsage
    duration_s: float
    usage_by_agent: dict[str, AgentUsage] = field(default_factory=dict)
    """This run's usage and that of every agent it delegated to, however deep."""
    turn: Turn | None = field(default=None, repr=False)
    """The run as a turn of its conversation: what a later run continues from."""


@dataclass
class RunState:
    """The mutable state of one run; agent kinds may hang resources on it."""

    ctx: RunContext
    memory: AgentMemory
    resources: dict[str, Any] = field(default_factory=dict)
    rejected_answers: int = 0
    """Final answers sent back for not matching the output schema."""
    last_prompt: tuple[ChatMessage, ...] = ()
    """What the run's previous model call sent: the next records only what is new."""
    additional_args: dict[str, Any] = field(default_factory=dict)
    """The caller's values beside the task (checked JSON values, see ``run_args``)."""


@dataclass(frozen=True)
class _Order:
    """What ``run`` was asked, checked, on its way to the thread that runs it."""

    task: str
    max_steps: int | None
    history: Sequence[Turn]
    additional_args: dict[str, Any]
    images: tuple[Image, ...] = ()
    """The task's images, loaded and checked (``mesh.models.images``)."""


class MultiStepAgent(ABC):
    template_name: str = ""
    offers_run_parallel: bool = False
    """Whether steps get ``run_parallel`` (code agents: their tool calls are sequential)."""
    args_as_variables: bool = False
    """Whether a run's ``additional_args`` are variables of the model's code."""
    max_history_turns: int = 20
    max_history_chars: int = 200_000
    """What a run reads of its conversation: the newest turns within both bounds, the older
    dropped whole (see ``conversation``); a turn is clipped to ``max_history_chars``."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        model: Model | None = None,
        *,
        managed_agents: Iterable[ManagedAgent] = (),
        max_steps: int = 20,
        name: str | None = None,
        description: str | None = None,
        instructions: str | None = None,
        prompt_template: str | None = None,
        budget: Budget | None = None,
        max_parallel: int = 8,
        output_schema: Mapping[str, Any] | None = None,
        step_callbacks: Iterable[StepCallback]
        | Mapping[type, StepCallback | Iterable[StepCallback]]
        | None = None,
        final_answer_checks: Iterable[FinalAnswerCheck] = (),
        planning_interval: int | None = None,
        stream_outputs: bool = False,
    ) -> None:
        if model is None:
            raise ConfigError(f"{type(self).__name__} needs a model, e.g. LiteLLMModel()")
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (got {max_steps})")
        if max_parallel < 1:
            raise ConfigError(f"max_parallel must be at least 1 (got {max_parallel})")
        if planning_interval is not None and planning_interval < 1:
            raise ConfigError(f"planning_interval must be at least 1 (got {planning_interval})")
        self.model = model
        self.max_steps = max_steps
        self.name = name or "agent"
        if not self.name.isidentifier():
            raise ConfigError(f"agent name {self.name!r} must be a Python identifier")
        self.description = description or ""
        self.instructions = instructions
        self.prompt_template = prompt_template
        self.budget = budget
        """This agent's own ceiling per run; a delegated run also gets what its caller has left."""
        self.max_parallel = max_parallel
        """How many calls one step may run at once (parallel tool calls, ``run_parallel``)."""
        self.answer_schema = AnswerSchema(output_schema) if output_schema is not None else None
        """What a final answer must be (JSON Schema); None: anything."""
        self.step_callbacks = StepCallbacks(step_callbacks)
        """Called after each step, plan and final answer (see ``callbacks``)."""
        self.final_answer_checks = list(final_answer_checks)
        """Each may reject a final answer: the model reads why and the run goes on."""
        self.planning_interval = planning_interval
        """Plan before the first step and every this many steps (see ``planning``); None: never."""
        self.stream_outputs = stream_outputs
        """Report the model's text as it is generated (``ModelOutputDelta`` events)."""
        self.tools: dict[str, Tool] = {}
        for item in [*tools, self._final_answer_tool()]:
            if not isinstance(item, Tool):
                raise ConfigError(f"{item!r} is not a Tool; decorate it with @tool")
            if item.name in self.tools and item.name != FINAL_ANSWER:
                raise ConfigError(f"two tools are named {item.name!r}")
            self.tools.setdefault(item.name, item)
        self.managed_agents: dict[str, ManagedAgent] = {}
        self._agent_tools: dict[str, ManagedAgentTool] = {}
        for agent in managed_agents:
            if not getattr(agent, "description", ""):
                raise ConfigError(f"managed agent {agent.name!r} needs a description")
            if agent.name in self.tools or agent.name in self.managed_agents:
                raise ConfigError(f"managed agent name {agent.name!r} is already taken")
            self.managed_agents[agent.name] = agent
        self.memory: AgentMemory | None = None
        """The memory of the most recent run started on this agent."""
        self._in_flight: dict[str, RunContext] = {}
        self._in_flight_lock = threading.Lock()

    # ----------------------------------------------------------------- running

    @overload
    def run(
        self,
        task: str,
        *,
        stream: Literal[False] = ...,
        max_steps: int | None = ...,
        return_full_result: Literal[False] = ...,
        context: RunContext | None = ...,
        reset: bool = ...,
        history: Sequence[Turn] | None = ...,
        additional_args: Mapping[str, Any] | None = ...,
        images: Sequence[ImageSource] | None = ...,
    ) -> Any: ...
    @overload
    def run(
        self,
        task: str,
        *,
        stream: Literal[False] = ...,
        max_steps: int | None = ...,
        return_full_result: Literal[True],
        context: RunContext | None = ...,
        reset: bool = ...,
        history: Sequence[Turn] | None = ...,
        additional_args: Mapping[str, Any] | None = ...,
        images: Sequence[ImageSource] | None = ...,
    ) -> RunResult: ...
    @overload
    def run(
        self,
        task: str,
        *,
        stream: Literal[True],
        max_steps: int | None = ...,
        return_full_result: bool = ...,
        context: RunContext | None = ...,
        reset: bool = ...,
        history: Sequence[Turn] | None = ...,
        additional_args: Mapping[str, Any] | None = ...,
        images: Sequence[ImageSource] | None = ...,
    ) -> Iterator[AgentEvent]: ...

    def run(
        self,
        task: str,
        *,
        stream: bool = False,
        max_steps: int | None = None,
        return_full_result: bool = False,
        context: RunContext | None = None,
        reset: bool = True,
        history: Sequence[Turn] | None = None,
        additional_args: Mapping[str, Any] | None = None,
        images: Sequence[ImageSource] | None = None,
    ) -> Any:
        """Solve ``task``; the final answer, a ``RunResult``, or (stream) an event iterator.

        Started inside another agent's run, this run becomes its child: its
        events join the parent's stream and the parent's cancellation stops it.
        A server passes its own ``context`` (run id, deadline, remote parent)
        so that it can cancel the run.

        ``reset=False`` continues the conversation of this agent's last run: the model reads
        its earlier tasks, their steps and answers (a run that failed adds no turn).
        ``history`` gives the earlier turns instead: how a server continues a conversation it
        keeps, as the agent object is shared by its runs. A run an agent delegates to starts
        afresh: a managed agent never reads its caller's conversation.

        ``additional_args`` (JSON values by name, see ``run_args``): a code agent's code finds
        each as a variable; every agent's model reads what they are, after the task.

        ``images`` (paths, bytes, ``data:`` URLs or ``Image``s; at most 8, 4 MiB each, 6 MiB in
        all, PNG, JPEG, GIF or WebP): the model sees them with the task, as a multimodal model
        does. A later turn of the conversation reads the task's text, not its images.
        """
        if not isinstance(task, str) or not task.strip():
            raise InvalidRequestError("task must be a non-empty string")
        turns = self._earlier_turns(reset, history)
        args = checked_args(additional_args, self.toolbox()) if additional_args else {}
        order = _Order(task, max_steps, turns, args, checked_images(images))
        if stream:
            return self._stream(order, context)
        result = self._run_in(context or self._new_context(sink=None), order)
        return result if return_full_result else result.output

    def _earlier_turns(self, reset: bool, history: Sequence[Turn] | None) -> list[Turn]:
        """The turns a run continues from, within ``max_history_turns/chars``."""
        if history is not None:
            if not reset:
                raise InvalidRequestError("give history, or reset=False, not both")
            turns = list(history)
        elif reset or self.memory is None:
            turns = []
        else:  # the last run's conversation, and the last run if it ended with an answer
            last = self.memory
            turns = [*last.history, *([last.turn] if last.turn is not None else [])]
        return keep_recent(turns, self.max_history_turns, self.max_history_chars)

    def _new_context(self, sink: EventSink | None) -> RunContext:
        parent = active_run()
        child = RunContext(agent=self.name) if parent is None else parent.child(self.name)
        if sink is not None:
            child.sink = sink
        return child

    def _stream(self, order: _Order, context: RunContext | None) -> Iterator[AgentEvent]:
        events: queue.Queue[AgentEvent | None] = queue.Queue()
        ctx = context or self._new_context(sink=events.put)
        ctx.sink = events.put
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._run_in(ctx, order)
            except BaseException as err:
                failure.append(err)
            finally:
                events.put(None)

        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(work,),
            name=f"run-{ctx.run_id[:8]}",
            daemon=True,
        )
        thread.start()
        try:
            while (event := events.get()) is not None:
                yield event
        finally:
            ctx.cancel()  # no-op when the run is over; stops it when the reader gave up
            thread.join()
        if failure:
            raise failure[0]

    def _run_in(self, ctx: RunContext, order: _Order) -> RunResult:
        with agent_span(self.name, ctx.run_id, ctx.parent_run_id) as span, self._running(ctx):
            try:
                return self._run_steps(ctx, order)
            except MeshError as err:
                record_error(span, ErrorInfo.of(err))
                raise

    @contextmanager
    def _running(self, ctx: RunContext) -> Iterator[None]:
        """The run is one of the agent's in flight while it lasts (what ``interrupt`` stops)."""
        with self._in_flight_lock:
            self._in_flight[ctx.run_id] = ctx
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight.pop(ctx.run_id, None)

    def interrupt(self) -> int:
        """Cancel every run of this agent in flight (smolagents' ``agent.interrupt()``): each
        ends as cancelled, with its jail and the runs it delegated. How many there were."""
        with self._in_flight_lock:
            runs = list(self._in_flight.values())
        for ctx in runs:
            ctx.cancel()
        return len(runs)

    def _run_steps(self, ctx: RunContext, order: _Order) -> RunResult:
        token = current_scope.set(ctx)
        started = time.monotonic()
        task, max_steps = order.task, order.max_steps
        if order.additional_args:  # the model reads what they are, after the task
            note = described(order.additional_args, as_variables=self.args_as_variables)
            task = f"{task}\n\n{note}"
        memory = AgentMemory(system_prompt="", task=task, history=list(order.history),
                             task_images=order.images)  # fmt: skip
        state = RunState(ctx=ctx, memory=memory, additional_args=order.additional_args)
        self.memory = state.memory
        if self.budget is not None:
            ctx.budget = self.budget.tighter(ctx.budget)
        ctx.spent = lambda: _total(state)
        ctx.report(RunStarted, task=order.task, trace_id=current_trace_id())
        error: ErrorInfo | None = None
        try:
            self._open_run(state)
            output, end_state = self._loop(state, max_steps or self.max_steps)
        except BaseException as err:  # a bug too: the record must not say the run went well
            error = ErrorInfo.of(err)
            raise
        finally:
            self._close_run(state)
            by_agent = self._finish(state, time.monotonic() - started, error)
            current_scope.reset(token)
        state.memory.turn = self._turn(state, output, end_state)
        return RunResult(
            output=output,
            state=end_state,
            run_id=ctx.run_id,
            steps=state.memory.steps,
            usage=state.memory.usage,
            duration_s=time.monotonic() - started,
            usage_by_agent=by_agent,
            turn=state.memory.turn,
        )

    def _finish(
        self, state: RunState, duration_s: float, error: ErrorInfo | None
    ) -> dict[str, AgentUsage]:
        """Report the end of the run, with usage rolled up, and pass it to the parent run."""
        by_agent = merge_usage([{self.name: state.memory.agent_usage}, state.ctx.usage_below()])
        state.ctx.report(RunFinished, usage=state.memory.usage, steps=len(state.memory.steps),
                         duration_s=duration_s, error=error, usage_by_agent=by_agent)  # fmt: skip
        if state.ctx.parent is not None:
            state.ctx.parent.add_usage_below(by_agent)
        return by_agent

    def _loop(self, state: RunState, max_steps: int) -> tuple[Any, Literal["success", "max_steps"]]:
        for number in range(1, max_steps + 1):
            state.ctx.raise_if_cancelled()
            if due(self.planning_interval, number):
                self._plan(state, number, max_steps)
            step = self._step(state, number)
            accepted = step.is_final and self._answer_fits(state, step)
            accepted = accepted and self._answer_passes_checks(state, step)
            self.step_callbacks(step, self)
            if accepted:
                return self._final(state, number, step.final_answer), "success"
        answer = self._answer_after_max_steps(state, max_steps)
        return self._final(state, max_steps + 1, answer), "max_steps"

    def _final(self, state: RunState, number: int, answer: Any) -> Any:
        state.ctx.report(FinalAnswer, number, answer=answer)
        self.step_callbacks(FinalAnswerStep(answer), self)
        return answer

    def _plan(self, state: RunState, number: int, max_steps: int) -> None:
        """Write (or update) the run's plan before step ``number``: a model call of its own,
        with its span, budget checks, event (and so its audit record) and callbacks."""
        toolbox = self.toolbox()
        initial = not state.memory.plans
        plan = PlanningStep(step_number=number, start_time=time.time(), initial=initial)
        tools = [t for n, t in toolbox.items() if n not in self.managed_agents]
        so_far = [] if initial else self._messages(state, toolbox)
        plan.model_input = plan_request(state.memory.task, so_far, tools=tools,
                                        managed_agents=list(self.managed_agents.values()),
                                        remaining_steps=max_steps - number + 1,
                                        images=state.memory.task_images)  # fmt: skip
        with planning_span(self.name, number):
            self._check_budget(state, next_call=True)
            started = time.monotonic()
            with chat_span(self.model.model_id) as span:
                try:
                    response = self._call_model(state, number, plan.model_input,
                                                stop=[PLAN_END], planning=True)  # fmt: skip
                except MeshError as err:
                    record_error(span, ErrorInfo.of(err))
                    raise
                record_response(span, response, plan.model_input)
            plan.model_output, plan.usage = response.message, response.usage
            plan.cost_usd = cost_usd(response.model_id or self.model.model_id, response.usage)
            plan.plan = plan_text(response.message.content, initial=initial,
                                  task=state.memory.task)  # fmt: skip
            plan.end_time = time.time()
            state.memory.plans.append(plan)
            state.ctx.report(Planning, number, plan=plan.plan, initial=initial,
                             usage=response.usage, model_id=response.model_id,
                             duration_s=time.monotonic() - started,
                             prompt=tuple(plan.model_input))  # fmt: skip
            self._check_budget(state, next_call=False)
        self.step_callbacks(plan, self)

    def _answer_passes_checks(self, state: RunState, step: ActionStep) -> bool:
        """Whether every final-answer check accepts the answer; if one does not, the step
        fails with its reason (the model reads it) and the run goes on."""
        if not self.final_answer_checks:
            return True
        reason = rejection(self.final_answer_checks, step.final_answer, state.memory, self)
        if reason is None:
            return True
        step.is_final, step.final_answer = False, None
        step.fail(ErrorInfo.of(ModelOutputError(reason)))
        state.ctx.report(StepFailed, step.step_number, error=_step_error(step))
        return False

    def _answer_fits(self, state: RunState, step: ActionStep) -> bool:
        """Whether the final answer matches the output schema. The first answer that does not
        goes back to the model as the step's error; the second ends the run."""
        if self.answer_schema is None:
            return True
        problems = self.answer_schema.problems(step.final_answer)
        if not problems:
            return True
        error = ModelOutputError(f"the final answer does not match the output schema: {problems}")
        if state.rejected_answers:
            raise error
        state.rejected_answers += 1
        step.is_final, step.final_answer = False, None
        step.fail(ErrorInfo.of(error))
        state.ctx.report(StepFailed, step.step_number, error=_step_error(step))
        return False

    def _step(self, state: RunState, number: int) -> ActionStep:
        with step_span(self.name, number) as span:
            step = self._take_step(state, number)
            if step.error is not None:
                record_error(span, _step_error(step))
            return step

    def _take_step(self, state: RunState, number: int) -> ActionStep:
        toolbox = self.toolbox()
        step = ActionStep(step_number=number, start_time=time.time())
        state.memory.steps.append(step)
        step.model_input = self._messages(state, toolbox)
        response = self._generate(state, step, self._model_tools(toolbox), self._stop_sequences())
        if response is not None:
            try:
                self._act(state, step, response, ToolRunner(state.ctx, step, toolbox))
            except ModelOutputError as err:
                step.fail(ErrorInfo.of(err))
        step.end_time = time.time()
        if step.error is not None:
            state.ctx.report(StepFailed, number, error=_step_error(step))
        elif step.observation is not None:
            state.ctx.report(Observation, number, text=step.observation)
        return step

    def _generate(
        self,
        state: RunState,
        step: ActionStep,
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        *,
        free_text: bool = False,
    ) -> ModelResponse | None:
        """One model call, with its span, budget checks and event (and so its audit record).
        None when the model answered something unusable: that is the step's error.
        ``free_text``: the answer is plain text (after max_steps), in no response format."""
        self._check_budget(state, next_call=True)
        started = time.monotonic()
        prompt = tuple(step.model_input)
        kept = shared_prefix(state.last_prompt, prompt)
        state.last_prompt = prompt
        with chat_span(self.model.model_id) as span:
            try:
                response = self._call_model(state, step.step_number, step.model_input, tools,
                                            stop, free_text=free_text)  # fmt: skip
            except ModelOutputError as err:
                step.fail(ErrorInfo.of(err))
                record_error(span, _step_error(step))
                return None
            except MeshError as err:
                record_error(span, ErrorInfo.of(err))
                raise
            record_response(span, response, prompt[kept:], kept=kept)
        step.cost_usd = cost_usd(response.model_id or self.model.model_id, response.usage)
        step.model_output, step.usage = response.message, response.usage
        state.ctx.report(
            ModelOutput,
            step.step_number,
            text=response.message.content,
            tool_calls=response.message.tool_calls,
            usage=response.usage,
            model_id=response.model_id,
            duration_s=time.monotonic() - started,
            prompt=prompt,
            prompt_kept=kept,
            cached=response.cached,
        )
        self._check_budget(state, next_call=False)  # the call happened: report it, then stop
        return response

    def _call_model(
        self,
        state: RunState,
        number: int,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        *,
        planning: bool = False,
        free_text: bool = False,
    ) -> ModelResponse:
        """The model call itself, with what the agent asks of it beyond the messages: its
        text streamed as events, and the format of an action step's answer (not a plan's,
        nor a ``free_text`` one's)."""
        options: dict[str, Any] = {}
        if self.stream_outputs:

            def on_delta(text: str) -> None:
                if text:
                    state.ctx.report(ModelOutputDelta, number, text=text, planning=planning)

            options["on_delta"] = on_delta
        if not (planning or free_text) and (response_format := self._response_format()):
            options["response_format"] = response_format
        return self.model.generate(messages, tools=tools, stop=stop, **options)

    def _check_budget(self, state: RunState, *, next_call: bool) -> None:
        if state.ctx.budget is not None:
            state.ctx.budget.check(_total(state), next_call=next_call, who=self.name)

    def _answer_after_max_steps(self, state: RunState, max_steps: int) -> Any:
        """One last model call for a best answer, through the same path as every other
        (span, budget, event, audit). Only the model failing makes it a max-steps error:
        a cancellation, deadline or budget raised meanwhile ends the run as what it is."""
        number = max_steps + 1
        with step_span(self.name, number) as span:
            step = ActionStep(step_number=number, start_time=time.time())
            state.memory.steps.append(step)
            step.model_input = [
                *self._messages(state, self.toolbox()),
                ChatMessage(role="user", content=MAX_STEPS_PROMPT),
            ]
            try:
                response = self._generate(state, step, free_text=True)
            except ModelError as err:
                step.fail(ErrorInfo.of(err))
                response = None
            step.end_time = time.time()
            text = (response.message.content or "").strip() if response is not None else ""
            if not text:
                why = f": asking for one failed: {step.error}" if step.error else ""
                error = MaxStepsError(
                    f"{self.name} reached max_steps={max_steps} without a final answer{why}"
                )
                record_error(span, ErrorInfo.of(error))
                raise error
            step.is_final, step.final_answer = True, text
            return text

    def replay(self, detailed: bool = False) -> None:
        """Print this agent's last run step by step, as smolagents' ``agent.replay()`` does
        (as ``mesh run`` showed it live; ``detailed``: with what each model call read)."""
        print_replay(self.memory, self.name, detailed=detailed)

    def write_memory_to_messages(self) -> list[ChatMessage]:
        """The last run as the chat messages the model read (smolagents' name)."""
        return self.memory.to_messages(self._step_messages) if self.memory else []

    # ----------------------------------------------------------- conversation

    def toolbox(self) -> dict[str, Tool]:
        """Everything callable this step: tools, managed agents, final_answer."""
        box = dict(self.tools)
        for agent in self.managed_agents.values():
            box[agent.name] = self._tool_of(agent)
        if FINAL_ANSWER not in box:  # removed from agent.tools at run time
            box[FINAL_ANSWER] = self._final_answer_tool()
        if self.offers_run_parallel and self.max_parallel > 1 and len(box) > 1:
            box.setdefault(PARALLEL, ParallelCallsTool(self.max_parallel))
        return box

    def _tool_of(self, agent: ManagedAgent) -> ManagedAgentTool:
        """The managed agent as a tool: one kept per agent (steps ask for it each time)."""
        tool = self._agent_tools.get(agent.name)
        if tool is None or tool.agent is not agent or tool.description != agent.description:
            tool = self._agent_tools[agent.name] = ManagedAgentTool(agent)
        return tool

    def _final_answer_tool(self) -> FinalAnswerTool:
        answers = self.answer_schema
        return FinalAnswerTool(answers.schema if answers is not None else None)

    def system_prompt(self, toolbox: dict[str, Tool] | None = None) -> str:
        toolbox = toolbox if toolbox is not None else self.toolbox()
        return render_prompt(
            self.template_name,
            self.prompt_template,
            name=self.name,
            description=self.description,
            instructions=self.instructions,
            tools=[t for n, t in toolbox.items() if n not in self.managed_agents],
            managed_agents=list(self.managed_agents.values()),
            **self._prompt_values(),
        )

    def _messages(self, state: RunState, toolbox: dict[str, Tool]) -> list[ChatMessage]:
        state.memory.system_prompt = self.system_prompt(toolbox)
        messages = [ChatMessage(role="system", content=state.memory.system_prompt)]
        for turn in state.memory.history:  # the conversation so far, oldest first
            messages.extend(turn.to_messages())
        messages.append(
            ChatMessage(role="user", content=state.memory.task, images=state.memory.task_images)
        )
        plans = list(state.memory.plans)
        for step in state.memory.steps:
            while plans and plans[0].step_number <= step.step_number:  # made before this step
                messages.extend(plans.pop(0).to_messages())
            if step.model_output is not None or step.error is not None:
                messages.extend(self._step_messages(step))
        for plan in plans:  # made for the step about to be taken
            messages.extend(plan.to_messages())
        return messages

    def _turn(self, state: RunState, output: Any, end_state: str) -> Turn:
        """The run as a turn: its steps as the model read them, then its answer (after
        max_steps, the last step is the answer itself, so it is not repeated)."""
        steps = state.memory.steps[:-1] if end_state == "max_steps" else state.memory.steps
        messages = [m for step in steps if step.model_output is not None or step.error is not None
                    for m in self._step_messages(step)]  # fmt: skip
        answer = answer_text(output)
        turn = Turn(state.memory.task, answer, tuple(messages), len(state.memory.steps))
        return turn.clipped(self.max_history_chars)

    def _error_message(self, step: ActionStep) -> ChatMessage:
        return ChatMessage(role="user", content=f"Error:\n{step.error}\n{RETRY_HINT}")

    # ------------------------------------------------------ agent-kind hooks

    @abstractmethod
    def _act(
        self, state: RunState, step: ActionStep, response: ModelResponse, tools: ToolRunner
    ) -> None:
        """Carry out the model's answer; set the step's observation, error or final answer."""

    @abstractmethod
    def _step_messages(self, step: ActionStep) -> list[ChatMessage]:
        """How a finished step reads in the conversation sent to the model."""

    def _model_tools(self, toolbox: dict[str, Tool]) -> Sequence[Tool] | None:
        return None

    def _stop_sequences(self) -> Sequence[str] | None:
        return None

    def _response_format(self) -> Mapping[str, Any] | None:
        """The format an action step's answer must have (a JSON schema); None: free text."""
        return None

    def _prompt_values(self) -> dict[str, Any]:
        return {}

    def _open_run(self, state: RunState) -> None:  # noqa: B027 - optional hook
        """Acquire per-run resources (e.g. an executor)."""

    def _close_run(self, state: RunState) -> None:  # noqa: B027 - optional hook
        """Release them; called however the run ends."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} tools={list(self.tools)}>"


def _step_error(step: ActionStep) -> ErrorInfo:
    """A failed step's error as data (a generic one if an agent kind set only its text)."""
    return step.error_info or ErrorInfo(MeshError.code, step.error or "")


def _total(state: RunState) -> AgentUsage:
    """What the run has spent so far: its own model calls and its delegates'."""
    spent = merge_usage([{"": state.memory.agent_usage}, state.ctx.usage_below()])
    return sum(spent.values(), AgentUsage())
