"""The restart policy of ``mesh up`` (its real processes are tested in test_mesh.py): backoff
between restarts, and giving up on a service that keeps crashing instead of looping."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.cli.supervise import CrashPolicy, supervise
from mesh.errors import AgentUnavailableError
from mesh.models import RetryPolicy


@dataclass
class DeadProcess:
    returncode: int = 1

    def poll(self) -> int:
        return self.returncode


@dataclass
class Service:
    agent: str = "flaky"
    address: str = "127.0.0.1:1"
    process: DeadProcess = field(default_factory=DeadProcess)


@dataclass
class CrashingMesh:
    """A mesh whose one service dies at once however often it is restarted."""

    services: list[Service] = field(default_factory=lambda: [Service()])
    restarts: int = 0

    def restart(self, index: int) -> Service:
        self.restarts += 1
        raise AgentUnavailableError("flaky exited during start-up (code 1)")


def test_a_service_that_keeps_crashing_is_given_up_on(capsys: object) -> None:
    mesh = CrashingMesh()
    backoff = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05)
    policy = CrashPolicy(max_crashes=3, window_s=60, backoff=backoff)
    assert supervise(mesh, lambda: False, policy) == 1  # type: ignore[arg-type]
    assert mesh.restarts == 3
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "flaky (127.0.0.1:1) crashed 4 times in 60 s; giving up on it" in err
    assert err.count("did not come back") == 3


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = CrashPolicy(backoff=RetryPolicy(initial_delay_s=0.5, max_delay_s=4))
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
