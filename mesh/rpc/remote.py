"""``RemoteAgent``: an agent served elsewhere, used exactly like a local one.

Give it to ``managed_agents=[...]`` and the manager's model calls it by name
with a task. Each call streams the remote run: its events join the caller's
stream one level deeper; the caller's remaining deadline becomes the call's
timeout; cancelling the caller cancels the call, and so the remote run and
its jail. A call is retried when the remote run never started (the agent
was unreachable); once it has, only if the agent is declared idempotent
(``idempotent=True``: running it twice does no harm), since its server may
have died mid-run. Several
addresses (or a DNS name with several records) are balanced round robin.

Every attempt of a call sends the same run id, chosen up front, so that the
service's run ledger knows a retry from a new run. A retry the service
refuses because that id already ran (the first attempt's run started after
all) rejoins that run with WatchRun where the service can show it, relaying
only the events not relayed yet; where it cannot (its service died, or it
keeps no run records), an idempotent agent's run starts again under a new id.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mesh.agents.context import RunContext, active_run
from mesh.agents.events import AgentEvent, FinalAnswer, RunFinished
from mesh.agents.unfinished import Unfinished
from mesh.errors import (
    AgentUnavailableError,
    AlreadyExistsError,
    DeadlineExceededError,
    ErrorInfo,
    MeshError,
    NotFoundError,
    RemoteAgentError,
    RunCancelledError,
)
from mesh.models.images import Image, ImageSource, checked_images
from mesh.rpc.client import AgentCard, AgentClient, EventStream
from mesh.rpc.security import MeshSecurity

__all__ = ["RemoteAgent"]

_GONE = object()
"""What ``_rejoin`` returns when the run cannot be followed."""


class RemoteAgent:
    def __init__(
        self,
        name: str,
        addresses: str | Sequence[str],
        description: str = "",
        *,
        timeout_s: float | None = None,
        retries: int = 2,
        retry_delay_s: float = 0.2,
        idempotent: bool = False,
        security: MeshSecurity | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.idempotent = idempotent
        """Safe to run twice: retry even a run that started, when its server went away."""
        self.retried_unstarted = 0
        """Calls retried because the remote run never started (always safe)."""
        self.retried_started = 0
        """Calls retried after their run started and its server went away (idempotent only)."""
        self.client = AgentClient(addresses, agent=name, security=security)
        self.target = self.client.target

    def describe(self, timeout_s: float = 5.0) -> AgentCard:
        return self.client.describe(timeout_s=timeout_s)

    def run(
        self,
        task: str,
        additional_args: Mapping[str, Any] | None = None,
        images: Sequence[ImageSource] | None = None,
    ) -> Any:
        """Run ``task`` remotely and return the final answer (see the module docstring).
        ``additional_args`` and ``images`` travel with it, checked before they leave (here,
        once, so that retries send the very images checked), as a local agent's run takes
        them."""
        delegation = _Delegation(active_run(), dict(additional_args or {}), checked_images(images))
        try:
            return self._run(task, delegation)
        except MeshError as err:
            delegation.abandon(err)  # the runs and calls the stream started end with it
            raise

    def close(self) -> None:
        self.client.close()

    def _run(self, task: str, delegation: _Delegation) -> Any:
        parent = delegation.parent
        for attempt in range(self.retries + 1):
            started = False
            try:
                return self._attempt(task, delegation, retry=attempt > 0)
            except _NotStarted as failure:
                error = failure.error
            except AgentUnavailableError as err:  # the run started, then its server went away
                if not self.idempotent:
                    raise
                error, started = err, True
            delegation.broken = error
            if attempt == self.retries or (parent is not None and parent.cancelled):
                raise error
            if started:
                self.retried_started += 1
            else:
                self.retried_unstarted += 1
            time.sleep(self.retry_delay_s * 2**attempt)
        raise AssertionError("unreachable")

    def _attempt(self, task: str, delegation: _Delegation, *, retry: bool) -> Any:
        try:
            return self._follow(delegation, self._start(task, delegation), fresh=True)
        except _Claimed as claimed:
            if not retry:
                raise claimed.error from claimed
        # The run id ran before: the run of an earlier attempt started after all.
        answer = self._rejoin(delegation)
        if answer is not _GONE:
            return answer
        if not self.idempotent:  # it started, and may have done work: not sent again
            raise delegation.broken or AgentUnavailableError(f"{self.name} went away")
        delegation.abandon(delegation.broken)
        delegation.run_id = uuid.uuid4().hex
        return self._follow(delegation, self._start(task, delegation), fresh=True)

    def _start(self, task: str, delegation: _Delegation) -> EventStream:
        parent = delegation.parent
        return self.client.run_stream(
            task, run_id=delegation.run_id, parent_run_id=parent.run_id if parent else "",
            budget=parent.remaining_budget() if parent is not None else None,
            timeout_s=self._timeout(parent), depth_offset=delegation.depth, scope=parent,
            additional_args=delegation.additional_args, images=delegation.images,
        )  # fmt: skip

    def _rejoin(self, delegation: _Delegation) -> Any:
        """Follow the run ``delegation.run_id`` started to its end, relaying what was not
        relayed yet; ``_GONE`` if this service cannot show it."""
        parent, run_id = delegation.parent, delegation.run_id
        if not self.describe().capabilities.run_records:  # no WatchRun there
            return _GONE
        stream = self.client.watch_run(run_id, 0, timeout_s=self._timeout(parent),
                                       depth_offset=delegation.depth, scope=parent)  # fmt: skip
        # Ending a watch leaves its run going: a cancel must reach the run itself.
        forget = parent.on_cancel(lambda: self._cancel_soon(run_id)) if parent else _nothing
        try:
            return self._follow(delegation, stream, fresh=False)
        except NotFoundError:
            if stream.started:
                raise
            return _GONE  # its service died: the run went with it
        except RunCancelledError:
            if parent is not None and parent.cancelled:
                raise
            return _GONE  # its service cancelled it when the broken stream went away
        finally:
            forget()

    def _follow(self, delegation: _Delegation, stream: EventStream, *, fresh: bool) -> Any:
        """Relay the stream's events into the parent's stream; the run's final answer.
        ``fresh``: the stream is a new run (not a rejoined one)."""
        parent, depth = delegation.parent, delegation.depth
        answer: Any = None
        finished, failure = False, None
        leftovers = fresh  # a new run: what a broken attempt left open ends when it starts
        with stream:
            try:
                for index, event in stream.indexed():
                    if leftovers:
                        delegation.abandon(delegation.broken)
                        leftovers = False
                    if not fresh and index <= delegation.seen:
                        continue  # relayed before the stream broke
                    delegation.relay(index, event)
                    if isinstance(event, FinalAnswer) and event.depth == depth:
                        answer = event.answer
                    if isinstance(event, RunFinished) and event.depth == depth:
                        finished, failure = True, event.error
                        if parent is not None:
                            parent.add_usage_below(event.usage_by_agent)
            except MeshError as err:
                if parent is not None and parent.cancelled:
                    raise RunCancelledError(f"the call to {self.name} was cancelled") from err
                if not stream.started and isinstance(err, AgentUnavailableError):
                    raise _NotStarted(err) from err
                if not stream.started and isinstance(err, AlreadyExistsError):
                    raise _Claimed(err) from err
                raise
        if not finished:
            raise RemoteAgentError(
                f"{self.name} at {self.target} ended its stream before the run finished"
            )
        if failure is not None:  # a watched run ends its stream normally, however it ended
            raise failure.to_exception()
        return answer

    def _cancel_soon(self, run_id: str) -> None:
        """Cancel the remote run, without holding up the cancelling thread."""

        def cancel() -> None:
            with contextlib.suppress(MeshError):  # it ended, or its service is gone
                self.client.cancel(run_id, timeout_s=5.0)

        threading.Thread(target=cancel, name=f"cancel-{run_id}", daemon=True).start()

    def _timeout(self, parent: RunContext | None) -> float | None:
        remaining = parent.remaining() if parent is not None else None
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(f"no time left to delegate to {self.name}")
        if remaining is None:
            return self.timeout_s
        return remaining if self.timeout_s is None else min(remaining, self.timeout_s)

    def __repr__(self) -> str:
        return f"<RemoteAgent {self.name!r} at {self.target}>"


class _Delegation:
    """One call of a remote agent, across its attempts: the run id they send, and what has
    been relayed into the caller's stream."""

    def __init__(
        self,
        parent: RunContext | None,
        additional_args: dict[str, Any],
        images: tuple[Image, ...] = (),
    ) -> None:
        self.parent = parent
        self.additional_args = additional_args
        self.images = images
        self.depth = parent.depth + 1 if parent is not None else 0
        self.run_id = uuid.uuid4().hex
        self.unfinished = Unfinished()
        self.seen = -1
        """The highest record index relayed (a rejoin skips up to it)."""
        self.broken: MeshError | None = None
        """What ended the last attempt, when one failed."""

    def relay(self, index: int, event: AgentEvent) -> None:
        self.seen = max(self.seen, index)
        self.unfinished.track(event)
        if self.parent is not None:
            self.parent.emit(event)

    def abandon(self, err: MeshError | None) -> None:
        """End with ``err`` the runs and tool calls relayed and not finished; what comes
        next is a new run."""
        if self.parent is not None and err is not None:
            for event in self.unfinished.finish(ErrorInfo.of(err)):
                self.parent.emit(event)
        self.seen = -1


class _NotStarted(Exception):
    """The remote run never started, so trying again is safe."""

    def __init__(self, error: AgentUnavailableError) -> None:
        self.error = error


class _Claimed(Exception):
    """The run id was refused: it had already started a run."""

    def __init__(self, error: AlreadyExistsError) -> None:
        self.error = error


def _nothing() -> None:
    pass
