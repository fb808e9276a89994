"""A run as a resource: what a service keeps about each run it served.

Clients find runs again by id (GetRun, ListRuns), so a run's record lives on
after its caller's stream: its state, task, times, answer, usage and error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo
from mesh.models.base import TokenUsage

__all__ = ["RunFilter", "RunRecord", "RunStatus"]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    MAX_STEPS = "max_steps"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_over(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass
class RunRecord:
    run_id: str
    agent: str
    task: str
    status: RunStatus = RunStatus.QUEUED
    session_id: str = ""
    parent_run_id: str = ""
    created: float = 0.0
    """Times are ``time.time()`` seconds; started and ended are None until they happen."""
    started: float | None = None
    ended: float | None = None
    answer: Any = None
    steps: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    usage_by_agent: dict[str, AgentUsage] = field(default_factory=dict)
    error: ErrorInfo | None = None
    event_count: int = 0
    events_truncated: bool = False


@dataclass(frozen=True)
class RunFilter:
    """Which runs ListRuns returns; every field that is set must match."""

    statuses: frozenset[RunStatus] = frozenset()
    created_after: float | None = None
    created_before: float | None = None
    session_id: str = ""

    def matches(self, run: RunRecord) -> bool:
        return (
            (not self.statuses or run.status in self.statuses)
            and (self.created_after is None or run.created >= self.created_after)
            and (self.created_before is None or run.created < self.created_before)
            and (not self.session_id or run.session_id == self.session_id)
        )
