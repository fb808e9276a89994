"""Fan-out across real services: a manager's ``run_parallel`` runs three delegations to a
specialist at once, and cancelling the manager, or its deadline passing, ends every child
run and kills every jail it was running."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import SPIN_TASK, cassette_lines
from tests.support import busy_jails, code, wait_until

FAN_OUT_TASK = "Fan out three spins."
CONFIG = """
[mesh]
entry = "manager"
replay = "always"

[agents.manager]
kind = "code"
description = "Fans out."
address = "127.0.0.1:0"
managed_agents = ["spinner"]
cassette = "manager.jsonl"

[agents.spinner]
kind = "code"
description = "Spins until stopped."
address = "127.0.0.1:0"
cassette = "spinner.jsonl"
max_concurrent_runs = 4
[agents.spinner.sandbox]
wall_seconds = 120
"""


@pytest.fixture(scope="module")
def fan_out_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcesses]:
    directory = tmp_path_factory.mktemp("fan-out")
    (directory / "mesh.toml").write_text(CONFIG)
    spins = ", ".join(f'{{"tool": "spinner", "arguments": {{"task": "{SPIN_TASK}"}}}}'
                      for _ in range(3))  # fmt: skip
    (directory / "manager.jsonl").write_text(cassette_lines(
        FAN_OUT_TASK, code(f"results = run_parallel(calls=[{spins}])"),
        code("final_answer(results)")))  # fmt: skip
    (directory / "spinner.jsonl").write_text(
        cassette_lines(SPIN_TASK, code("while True:\n    pass"))
    )
    config = load_mesh_config(directory / "mesh.toml")
    with MeshProcesses(config, log_dir=directory / "logs") as mesh:
        yield mesh


def stub(mesh: MeshProcesses, agent: str) -> Any:
    return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(mesh.addresses[agent][0]))  # type: ignore[no-untyped-call]


def spinner_pid(mesh: MeshProcesses) -> int:
    return next(s.process.pid for s in mesh.services if s.agent == "spinner")


def test_cancelling_the_manager_cancels_every_child_of_the_fan_out(
    fan_out_mesh: MeshProcesses,
) -> None:
    call = stub(fan_out_mesh, "manager").RunStream(
        pb.RunStreamRequest(task=FAN_OUT_TASK, run_id="fan-out-1"), timeout=60)  # fmt: skip
    events = (event for response in call for event in response.events)
    children = []
    for event in events:  # all three delegations are in flight at once
        if event.WhichOneof("kind") == "run_started" and event.depth == 1:
            children.append(event.run_id)
            if len(children) == 3:
                break
    spinning = wait_until(lambda: len(busy_jails(spinner_pid(fan_out_mesh))) == 3 and
                          busy_jails(spinner_pid(fan_out_mesh)))  # fmt: skip
    stub(fan_out_mesh, "manager").Cancel(pb.CancelRequest(run_id="fan-out-1"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        list(events)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: not busy_jails(spinner_pid(fan_out_mesh)) & spinning)
    for child in children:  # every child run is over, not only the first
        assert_over(fan_out_mesh, child)


def test_the_callers_deadline_reaches_every_child(fan_out_mesh: MeshProcesses) -> None:
    call = stub(fan_out_mesh, "manager").RunStream(pb.RunStreamRequest(task=FAN_OUT_TASK),
                                                   timeout=6)  # fmt: skip
    started = []
    with pytest.raises(grpc.RpcError) as err:
        for response in call:
            started += [e for e in response.events
                        if e.WhichOneof("kind") == "run_started" and e.depth == 1]  # fmt: skip
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(started) == 3  # all three ran until the deadline, then stopped
    wait_until(lambda: not busy_jails(spinner_pid(fan_out_mesh)))
    for child in started:
        assert_over(fan_out_mesh, child.run_id)


def assert_over(mesh: MeshProcesses, run_id: str) -> None:
    """The spinner's run ended cancelled, and a Cancel says there is nothing left to cancel."""
    spinner = stub(mesh, "spinner")
    wait_until(lambda: spinner.GetRun(pb.GetRunRequest(run_id=run_id), timeout=5).run.state
               == pb.RUN_STATE_CANCELLED)  # fmt: skip
    over = spinner.Cancel(pb.CancelRequest(run_id=run_id), timeout=5)
    assert (over.cancelled, over.state) == (False, pb.RUN_STATE_CANCELLED)
