"""``MeshTaskHandler``: A2A's requests answered by our run model, below any transport.

The SDK's ``RequestHandler`` interface, implemented over a ``ServedAgent``
rather than the SDK's task store and executor: a task is a run the service
already keeps (records, events, ledger, audit, sessions, cancellation), so
``ListTasks`` lists the agent's runs, ``GetTask`` reads a run's record, and
``CancelTask`` cancels a run and, through it, everything it delegated and
its jail.

A message without a task id starts a run that lives on without its caller
(as ``StartRun``): an A2A client that drops a stream rejoins with
``SubscribeToTask``. A message with a task id answers the question that
task's run waits on (``user_input``). A blocking call returns at a terminal
or interrupted state; the call's deadline, if it has one and waits, is the
run's too. Our errors become A2A's here, once (``_a2a_errors``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler, validate_request_params
from a2a.types import a2a_pb2 as a2a
from a2a.utils import errors as a2a_errors

from mesh._proto import agent_pb2 as pb
from mesh.errors import InvalidRequestError, NotFoundError
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.host.served_agent import RunOrder, ServedAgent
from mesh.rpc.a2a.tasks import (
    ContentTypeError,
    EventMapper,
    history_of,
    run_input,
    task_of,
)
from mesh.rpc.identifiers import check_identifier
from mesh.text import clip

__all__ = ["MeshTaskHandler"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_LISTED = 10_000
"""ListTasks orders (and counts, for ``total_size``) at most this many matching runs."""
REPLY_KEY = "a2a.reply"
"""A run that sets its metadata's ``a2a.reply`` to ``"message"`` (small talk, say) is
answered, when a blocking SendMessage started it and it completed, by a direct Message
holding its answer rather than by its task (the spec lets an agent do either)."""
CANCEL_WAIT_S = 10.0
MAX_REMEMBERED_TASKS = 2_000
MAX_REMEMBERED_PER_TASK = 20
"""How long CancelTask waits for the run to have stopped, to answer its final state."""

_STATES: dict[int, frozenset[RunStatus]] = {
    a2a.TASK_STATE_SUBMITTED: frozenset({RunStatus.QUEUED}),
    a2a.TASK_STATE_WORKING: frozenset({RunStatus.RUNNING}),
    a2a.TASK_STATE_INPUT_REQUIRED: frozenset({RunStatus.RUNNING}),
    a2a.TASK_STATE_COMPLETED: frozenset({RunStatus.SUCCEEDED, RunStatus.MAX_STEPS}),
    a2a.TASK_STATE_FAILED: frozenset({RunStatus.FAILED}),
    a2a.TASK_STATE_CANCELED: frozenset({RunStatus.CANCELLED}),
}
"""Our run states for an A2A state filter (rejected and auth-required: none of ours)."""


class MeshTaskHandler(RequestHandler):
    def __init__(self, served: ServedAgent[pb.RunEvent]) -> None:
        self.served = served
        self._sent: OrderedDict[str, list[str]] = OrderedDict()
        """The ids of the messages each task was sent, for its history (the newest tasks')."""

    def _remember(self, run_id: str, message_id: str) -> None:
        sent = self._sent.setdefault(run_id, [])
        if len(sent) < MAX_REMEMBERED_PER_TASK:
            sent.append(message_id)
        while len(self._sent) > MAX_REMEMBERED_TASKS:
            self._sent.popitem(last=False)

    # ------------------------------------------------------------------ messages

    @validate_request_params
    async def on_message_send(self, params: a2a.SendMessageRequest, context: ServerCallContext
                              ) -> a2a.Task | a2a.Message:  # fmt: skip
        with _a2a_errors():
            blocking = not params.configuration.return_immediately
            record, since = await self._deliver(params.message, context, bound=blocking)
            run = self.served.runs.get(record.run_id)  # its metadata, read once it has ended
            if blocking:
                async for _ in self._updates(record, since, stop_at_pause=True):
                    pass
            length = (params.configuration.history_length
                      if params.configuration.HasField("history_length") else None)  # fmt: skip
            task = await self._task(record.run_id, history_length=length)
            if run is not None and run.metadata.get(REPLY_KEY) == "message":
                return _as_message(task) or task
            return task

    @validate_request_params
    async def on_message_send_stream(
        self, params: a2a.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        with _a2a_errors():
            record, since = await self._deliver(params.message, context, bound=True)
            yield await self._task(record.run_id)
            async for update in self._updates(record, since, stop_at_pause=True):
                yield update

    # --------------------------------------------------------------------- tasks

    @validate_request_params
    async def on_get_task(self, params: a2a.GetTaskRequest, context: ServerCallContext
                          ) -> a2a.Task | None:  # fmt: skip
        with _a2a_errors():
            length = params.history_length if params.HasField("history_length") else None
            if length is not None and length < 0:
                raise InvalidRequestError("history_length must be >= 0")
            return await self._task(_task_id(params.id), history_length=length)

    async def on_list_tasks(self, params: a2a.ListTasksRequest, context: ServerCallContext
                            ) -> a2a.ListTasksResponse:  # fmt: skip
        with _a2a_errors():
            size = params.page_size if params.HasField("page_size") else DEFAULT_PAGE_SIZE
            if not 1 <= size <= MAX_PAGE_SIZE:
                raise InvalidRequestError(f"page_size must be 1 to {MAX_PAGE_SIZE}")
            length = params.history_length if params.HasField("history_length") else None
            if length is not None and length < 0:
                raise InvalidRequestError("history_length must be >= 0")
            where, keep = _filter(params)
            matching = await self._matching(where, keep)
            start = _page_start(matching, params.page_token)
            page = matching[start : start + size]
            more = start + size < len(matching)
            token = _page_token(page[-1]) if more and page else ""
            tasks = [self._snapshot(r, length, params.include_artifacts) for r in page]
            return a2a.ListTasksResponse(tasks=tasks, next_page_token=token, page_size=size,
                                         total_size=len(matching))  # fmt: skip

    @validate_request_params
    async def on_cancel_task(self, params: a2a.CancelTaskRequest, context: ServerCallContext
                             ) -> a2a.Task | None:  # fmt: skip
        with _a2a_errors():
            run_id = _task_id(params.id)
            stopping, status = await self.served.cancel(run_id)
            if not stopping and status.is_over and status != RunStatus.CANCELLED:
                raise a2a_errors.TaskNotCancelableError(
                    f"task {clip(run_id, 40)} is already {status.value}: it cannot be canceled"
                )
            if stopping:  # answer its final state: it stops at its next step, within moments
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._until_over(run_id), CANCEL_WAIT_S)
            return await self._task(run_id)

    @validate_request_params
    async def on_subscribe_to_task(
        self, params: a2a.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        with _a2a_errors():
            record = await self.served.get_run(_task_id(params.id))
            if record.status.is_over:
                raise a2a_errors.UnsupportedOperationError(
                    f"task {clip(record.run_id, 40)} is {record.status.value}: a task that "
                    "has ended has no updates to subscribe to (GetTask reads it)"
                )
            yield await self._task(record.run_id)
            async for update in self._updates(record, record.event_count, stop_at_pause=False):
                yield update

    # ---------------------------------------------------- declared unsupported

    async def on_create_task_push_notification_config(
        self, params: a2a.TaskPushNotificationConfig, context: ServerCallContext
    ) -> Any:
        raise _no_push()

    async def on_get_task_push_notification_config(
        self, params: a2a.GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> Any:
        raise _no_push()

    async def on_list_task_push_notification_configs(
        self, params: a2a.ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> Any:
        raise _no_push()

    async def on_delete_task_push_notification_config(
        self, params: a2a.DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise _no_push()

    async def on_get_extended_agent_card(self, params: a2a.GetExtendedAgentCardRequest,
                                         context: ServerCallContext) -> a2a.AgentCard:  # fmt: skip
        raise a2a_errors.UnsupportedOperationError(
            "this agent declares no extended card: its public card is all there is"
        )

    # ----------------------------------------------------------------- internals

    async def _deliver(self, message: a2a.Message, context: ServerCallContext, *, bound: bool
                       ) -> tuple[RunRecord, int]:  # fmt: skip
        """Start the run ``message`` asks for, or answer the question its task's run waits on;
        the run's record and the index of its first event this call reports."""
        given = run_input(message, self.served.agent.toolbox)
        if message.task_id:
            return await self._answer(message, given.task, given.metadata)
        session_id = check_identifier(message.context_id, "context_id") or _new_id()
        deadline = _deadline(context) if bound else None
        metadata = {**given.metadata, "a2a.context_id": session_id}
        order = RunOrder(task=given.task, session_id=session_id, deadline=deadline,
                         additional_args=given.additional_args, images=given.images,
                         accepts_input=True, metadata=metadata)  # fmt: skip
        record, _ = await self.served.start(order)
        self._remember(record.run_id, message.message_id)
        return record, 0

    async def _answer(self, message: a2a.Message, text: str, metadata: dict[str, str]
                      ) -> tuple[RunRecord, int]:  # fmt: skip
        record = await self.served.get_run(_task_id(message.task_id))
        if message.context_id and message.context_id != record.session_id:
            raise InvalidRequestError(
                f"context_id {clip(message.context_id, 40)!r} is not the context of task "
                f"{clip(record.run_id, 40)}"
            )
        if record.status.is_over:
            raise a2a_errors.UnsupportedOperationError(
                f"task {clip(record.run_id, 40)} is {record.status.value}: a task that has "
                "ended takes no more messages (send one without task_id, in its context)"
            )
        if self.served.question(record.run_id) is None:
            raise a2a_errors.UnsupportedOperationError(
                f"task {clip(record.run_id, 40)} is working and asks nothing: wait for it, "
                "or cancel it"
            )
        since = self.served.store.get(record.run_id).event_count
        self.served.answer(record.run_id, text, {**metadata, "a2a.context_id": record.session_id})
        self._remember(record.run_id, message.message_id)
        return record, since

    async def _updates(self, record: RunRecord, since: int, *, stop_at_pause: bool
                       ) -> AsyncIterator[Event]:  # fmt: skip
        """The run's updates from event ``since``, until it ends (or pauses for input). The
        last update comes once the run's record says it ended too, so that a client that
        reads the task next finds it as the stream left it."""
        mapper = EventMapper(record.run_id, record.session_id)
        async for batch in self.served.watch_run(record.run_id, since):
            for index, event in batch:
                event.index = index  # its position in the log, the same every time
                for update in mapper.updates(event):
                    if mapper.over:
                        ending = update  # sent when the record has it too
                        break
                    yield update
                if stop_at_pause and mapper.paused:
                    return
        ended = await self.served.get_run(record.run_id)
        if mapper.over:
            yield ending
        elif ended.status.is_over:  # ended without reporting it (refused before it ran)
            yield mapper.ending(ended)

    async def _until_over(self, run_id: str) -> None:
        async for _ in self.served.watch_run(run_id, self.served.store.get(run_id).event_count):
            pass

    async def _task(self, run_id: str, history_length: int | None = None) -> a2a.Task:
        return self._snapshot(await self.served.get_run(run_id), history_length, True)

    def _snapshot(self, record: RunRecord, history_length: int | None,
                  include_artifacts: bool) -> a2a.Task:  # fmt: skip
        events = self.served.store.kept(record.run_id) if history_length != 0 else []
        for index, event in events:
            event.index = index
        sent = self._sent.get(record.run_id, [])
        history = history_of(record, [event for _, event in events], sent)
        return task_of(record, question=self.served.question(record.run_id), history=history,
                       history_length=history_length,
                       include_artifacts=include_artifacts)  # fmt: skip

    async def _matching(self, where: RunFilter, keep: Any) -> list[RunRecord]:
        """The runs a ListTasks asks for, the most recently updated first (the spec's order;
        our store keeps them by creation), at most ``MAX_LISTED``."""
        found: list[RunRecord] = []
        token = ""
        while len(found) < MAX_LISTED:
            records, token = await self.served.list_runs(where, MAX_PAGE_SIZE, token)
            found += [r for r in records if keep(r, self.served.question(r.run_id))]
            if not token:
                break
        return sorted(found[:MAX_LISTED], key=_update_order, reverse=True)


def _as_message(task: a2a.Task) -> a2a.Message | None:
    """A completed task's answer as a direct reply (see ``REPLY_KEY``)."""
    if task.status.state != a2a.TASK_STATE_COMPLETED or not task.artifacts:
        return None
    return a2a.Message(message_id=f"{task.id}:reply", role=a2a.ROLE_AGENT,
                       context_id=task.context_id, parts=task.artifacts[0].parts)  # fmt: skip


def _updated(record: RunRecord) -> float:
    return record.ended or record.started or record.created


def _update_order(record: RunRecord) -> tuple[float, str]:
    return _updated(record), record.run_id


def _page_token(last: RunRecord) -> str:
    """Where the next page starts: after the last task of this one, in update order."""
    return base64.urlsafe_b64encode(f"{_updated(last)!r} {last.run_id}".encode()).decode()


def _page_start(ordered: list[RunRecord], token: str) -> int:
    """The index of the first task after the one ``token`` names (0 without a token)."""
    if not token:
        return 0
    try:
        updated, _, run_id = base64.urlsafe_b64decode(token.encode()).decode().partition(" ")
        after = (float(updated), run_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidRequestError("page_token is not one this server gave") from None
    return next((n for n, r in enumerate(ordered) if _update_order(r) < after), len(ordered))


def _filter(params: a2a.ListTasksRequest) -> tuple[RunFilter, Any]:
    """The store's filter for the request, and the test it cannot express (states that are
    ours plus a question, update times)."""
    if params.status and params.status not in _STATES:
        statuses: frozenset[RunStatus] = frozenset()
        none = True
    else:
        statuses, none = _STATES.get(params.status, frozenset()), False
    session_id = check_identifier(params.context_id, "context_id")
    after = (params.status_timestamp_after.ToNanoseconds() / 1e9
             if params.HasField("status_timestamp_after") else None)  # fmt: skip
    wants = params.status

    def keep(record: RunRecord, question: str | None) -> bool:
        if none:
            return False
        if wants == a2a.TASK_STATE_INPUT_REQUIRED and question is None:
            return False
        if wants == a2a.TASK_STATE_WORKING and question is not None:
            return False
        updated = record.ended or record.started or record.created
        return after is None or updated > after

    return RunFilter(statuses=statuses, session_id=session_id), keep


def _task_id(value: str) -> str:
    if not value:
        raise InvalidRequestError("a task id is required")
    try:
        return check_identifier(value, "task id")
    except InvalidRequestError as err:  # no run can have it
        raise NotFoundError(err.message) from None


def _deadline(context: ServerCallContext) -> float | None:
    call = context.state.get("grpc_context")
    remaining = call.time_remaining() if call is not None else None
    return None if remaining is None else time.monotonic() + remaining


def _new_id() -> str:
    return uuid.uuid4().hex


def _no_push() -> a2a_errors.A2AError:
    return a2a_errors.PushNotificationNotSupportedError(
        "this agent does not send push notifications: stream, or subscribe to the task"
    )


@contextlib.contextmanager
def _a2a_errors() -> Iterator[None]:
    """Our request errors as the A2A errors they are; the rest keep our status mapping."""
    try:
        yield
    except ContentTypeError as err:
        raise a2a_errors.ContentTypeNotSupportedError(err.message) from None
    except NotFoundError as err:
        raise a2a_errors.TaskNotFoundError(err.message) from None
    except InvalidRequestError as err:
        raise a2a_errors.InvalidParamsError(err.message) from None
