"""Keeping a mesh up: a service that dies is restarted, with backoff, while the others serve.

Its callers meanwhile get what a dead specialist always gives them (an
observation their model reads, or UNAVAILABLE), and each restart is said in
the terminal. A service that keeps crashing (``max_crashes`` within
``window_s``) is given up on, and the mesh stops with a message that says so,
rather than restarting forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.cli.console import say
from mesh.errors import AgentUnavailableError
from mesh.launcher import MeshProcesses
from mesh.models import RetryPolicy

__all__ = ["CrashPolicy", "supervise"]


@dataclass(frozen=True)
class CrashPolicy:
    max_crashes: int = 5
    window_s: float = 60.0
    backoff: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(initial_delay_s=0.5, max_delay_s=10.0)
    )

    def delay(self, crashes: int) -> float:
        return self.backoff.delay(max(0, crashes - 1))


def supervise(mesh: MeshProcesses, stopping: Callable[[], bool],
              policy: CrashPolicy = CrashPolicy()) -> int:  # fmt: skip
    """Watch until ``stopping()``; 0 then, 1 if a service had to be given up on."""
    crashes: dict[int, list[float]] = {}
    due: dict[int, float] = {}  # service index -> when to restart it
    while not stopping():
        now = time.monotonic()
        for index, service in enumerate(mesh.services):
            if index in due or service.process.poll() is None:
                continue
            recent = [t for t in crashes.get(index, []) if now - t < policy.window_s] + [now]
            crashes[index] = recent
            if len(recent) > policy.max_crashes:
                say(f"{service.agent} ({service.address}) crashed {len(recent)} times in "
                    f"{policy.window_s:g} s; giving up on it and stopping the mesh")  # fmt: skip
                return 1
            delay = policy.delay(len(recent))
            say(f"{service.agent} ({service.address}) exited (code {service.process.returncode});"
                f" restarting it in {delay:g} s")  # fmt: skip
            due[index] = now + delay
        for index, when in list(due.items()):
            if now >= when and not stopping():
                del due[index]
                _restart(mesh, index)
        time.sleep(0.2)
    return 0


def _restart(mesh: MeshProcesses, index: int) -> None:
    agent = mesh.services[index].agent
    try:
        service = mesh.restart(index)
    except AgentUnavailableError as err:  # still dead: the next look counts another crash
        say(f"{agent} did not come back: {err.message}")
        return
    say(f"{agent} is serving again on {service.address}")
