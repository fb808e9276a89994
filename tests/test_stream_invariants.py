"""The stream and the audit tell the truth however a run ends: a property test.

The seed mesh runs in its own processes (manager, research and math
specialists), each model call taking a little time; then the seed task is
cancelled, or given a deadline, at random moments of its life, through the
real services. Whatever the moment, the invariants of ``tests.invariants``
hold in the caller's stream (for a Cancel, the stream goes on to the end)
and in every service's audit log, and a delegation cut short is never
reported as a success.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.events import AgentEvent, RunFinished, ToolCallFinished
from mesh.append_only import read_records
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.convert import event_from_proto
from tests.invariants import audit_problems, stream_problems
from tests.mesh_setup import SEED_TASK
from tests.support import wait_until

SPECIALISTS = ("research_specialist", "math_specialist")
TRIALS = int(os.environ.get("MESH_INVARIANT_TRIALS", "10"))
SEED = int(os.environ.get("MESH_INVARIANT_SEED", str(time.time_ns() % 100_000)))


@pytest.fixture(scope="module")
def seed_mesh(mesh_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcesses]:
    directory = tmp_path_factory.mktemp("invariants")
    config_text = (mesh_dir / "mesh.toml").read_text()
    config_text = config_text.replace(
        'replay = "always"', 'replay = "always"\nreplay_latency_ms = 60'
    )
    (directory / "mesh.toml").write_text(config_text)
    for cassette in mesh_dir.glob("*.jsonl"):
        (directory / cassette.name).write_text(cassette.read_text())
    config = load_mesh_config(directory / "mesh.toml")
    env = {"MESH_MEMO_PATH": str(directory / "memo.sqlite3"),
           "MESH_AUDIT_DIR": str(directory / "audit")}  # fmt: skip
    only = ("manager", *SPECIALISTS)
    with MeshProcesses(config, only=only, log_dir=directory / "logs", env=env) as processes:
        yield processes


def manager(mesh: MeshProcesses) -> Any:
    channel = grpc.insecure_channel(mesh.addresses["manager"][0])
    return agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]


def audit_entries(mesh: MeshProcesses) -> list[dict[str, Any]]:
    directory = Path(mesh.env["MESH_AUDIT_DIR"])
    entries = [e for path in sorted(directory.glob("*.jsonl")) for e in read_records(path)]
    return sorted(entries, key=lambda e: e["ts"])


def runs_of(entries: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """The entries of run ``root`` and of the runs it delegated."""
    runs = {root} | {e["run_id"] for e in entries if e.get("parent_run_id") == root}
    return [e for e in entries if e["run_id"] in runs]


def finished(entries: list[dict[str, Any]], root: str) -> bool:
    """Whether ``root`` and every run it delegated have their end in the audit."""
    mine = runs_of(entries, root)
    started = {e["run_id"] for e in mine if e["event"] == "RunStarted"}
    ended = {e["run_id"] for e in mine if e["event"] == "RunFinished"}
    return root in ended and started <= ended


def audit_once_finished(mesh: MeshProcesses, run_id: str) -> list[dict[str, Any]]:
    """Every audit entry, once the run and those it delegated have their end written."""
    entries: list[dict[str, Any]] = []

    def ended() -> bool:
        entries[:] = audit_entries(mesh)
        return finished(entries, run_id)

    wait_until(ended)
    return entries


def read_to_the_end(call: Any) -> tuple[list[AgentEvent], grpc.StatusCode]:
    events: list[AgentEvent] = []
    try:
        for response in call:
            events += [e for m in response.events if (e := event_from_proto(m)) is not None]
    except grpc.RpcError as err:
        return events, err.code()
    return events, grpc.StatusCode.OK


def delegation_problems(events: list[AgentEvent]) -> list[str]:
    """A delegation reported as a success must have a specialist run that succeeded."""
    problems = []
    for name in SPECIALISTS:
        succeeded_calls = sum(1 for e in events if isinstance(e, ToolCallFinished)
                              and e.depth == 0 and e.name == name and e.error is None)  # fmt: skip
        succeeded_runs = sum(1 for e in events if isinstance(e, RunFinished)
                             and e.depth == 1 and e.agent == name and e.error is None)  # fmt: skip
        if succeeded_calls > succeeded_runs:
            problems.append(f"{name}: {succeeded_calls} calls reported a success, "
                            f"{succeeded_runs} of its runs succeeded")  # fmt: skip
    return problems


def test_a_whole_run_keeps_the_invariants(seed_mesh: MeshProcesses) -> None:
    call = manager(seed_mesh).RunStream(pb.RunStreamRequest(task=SEED_TASK), timeout=60)
    events, status = read_to_the_end(call)
    assert status == grpc.StatusCode.OK
    assert stream_problems(events) == [] and delegation_problems(events) == []
    assert {e.agent for e in events if e.depth == 1} == set(SPECIALISTS)


def test_cancel_at_any_moment_keeps_the_invariants(seed_mesh: MeshProcesses) -> None:
    rng = random.Random(SEED)
    outcomes = []
    for trial in range(TRIALS):
        run_id = f"cancel-{SEED}-{trial}"
        delay = rng.uniform(0.0, 1.5)
        stub = manager(seed_mesh)
        call = stub.RunStream(pb.RunStreamRequest(task=SEED_TASK, run_id=run_id), timeout=60)
        timer = threading.Timer(delay, _cancel, (stub, run_id))
        timer.start()
        events, status = read_to_the_end(call)
        timer.join()
        where = f"seed {SEED}, trial {trial}, cancelled after {delay:.3f} s"
        assert stream_problems(events) == [], where
        assert delegation_problems(events) == [], where
        ends = [e for e in events if isinstance(e, RunFinished) and e.run_id == run_id]
        if status == grpc.StatusCode.CANCELLED:
            assert ends and ends[0].error and ends[0].error.reason == "run_cancelled", where
        else:  # the run was over before the cancel came
            assert status == grpc.StatusCode.OK and ends and ends[0].error is None, where
        entries = audit_once_finished(seed_mesh, run_id)
        assert audit_problems(runs_of(entries, run_id)) == [], where
        outcomes.append(status)
    assert grpc.StatusCode.CANCELLED in outcomes  # the moments did fall inside runs


def test_a_deadline_at_any_moment_keeps_the_audit_true(seed_mesh: MeshProcesses) -> None:
    rng = random.Random(SEED + 1)
    cut_short = 0
    for trial in range(TRIALS):
        run_id = f"deadline-{SEED}-{trial}"
        timeout = rng.uniform(0.05, 1.5)
        call = manager(seed_mesh).RunStream(
            pb.RunStreamRequest(task=SEED_TASK, run_id=run_id), timeout=timeout
        )
        events, status = read_to_the_end(call)
        where = f"seed {SEED}, trial {trial}, deadline {timeout:.3f} s"
        assert status in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), where
        entries = audit_once_finished(seed_mesh, run_id)
        mine = runs_of(entries, run_id)
        assert audit_problems(mine) == [], where
        end = next(e for e in mine if e["event"] == "RunFinished" and e["run_id"] == run_id)
        if end["error"] is not None:  # (it may also have ended just before its deadline)
            assert end["error"]["reason"] in ("deadline_exceeded", "run_cancelled"), where
        if status == grpc.StatusCode.OK:
            assert stream_problems(events) == [], where
        cut_short += end["error"] is not None
    assert cut_short  # the deadlines did fall inside runs


def _cancel(stub: Any, run_id: str) -> None:
    try:
        stub.Cancel(pb.CancelRequest(run_id=run_id), timeout=5)
    except grpc.RpcError as err:  # the run may be over already
        assert err.code() == grpc.StatusCode.NOT_FOUND
