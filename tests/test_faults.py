"""Injected faults: misbehaving specialists, a failing model endpoint, a jail killed from
outside, the manager killed mid-run. Each time the caller gets a clear outcome within its
deadline, nothing is left running, and work that started is not done twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh import Cassette, ChatMessage, ModelResponse, ReplayServer, TokenUsage
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.events import RunFinished
from mesh.host.audit import default_audit_dir, read_run
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.convert import event_from_proto
from tests.invariants import stream_problems
from tests.mesh_setup import (
    DOWN_TASK,
    LOST_TASK,
    ROOT,
    SLOW_TASK,
    cassette_lines,
    litellm_math_service,
)
from tests.support import alive, code, descendants, wait_until


def stub(address: str) -> Any:
    return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]


def stream_events(call: Any) -> list[pb.RunEvent]:
    return [event for response in call for event in response.events]


def texts(events: list[pb.RunEvent]) -> str:
    return "\n".join(e.observation.text or e.step_failed.error.message for e in events)


@pytest.fixture
def fault_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    calls = tmp_path / "calls"
    calls.touch()
    command = [sys.executable, "-m", "tests.fault_server", request.param, str(calls)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = process.stdout.readline().split()[-1]
    yield f"127.0.0.1:{port}", calls
    process.kill()
    process.wait()


@pytest.mark.parametrize(
    ("fault_server", "message"),
    [("garbage", "research_specialist at 127.0.0.1:"),
     ("early-close", "ended its stream before the run finished")],
    indirect=["fault_server"],
)  # fmt: skip
def test_a_specialist_answering_garbage_or_closing_early_is_an_observation_not_a_retry(
    mesh_dir: Path, fault_server: tuple[str, Path], message: str
) -> None:
    address, calls = fault_server
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_ADDRESS_RESEARCH_SPECIALIST": address}
    with MeshProcesses(config, only=("manager",), env=env) as mesh:
        call = stub(mesh.addresses["manager"][0]).RunStream(
            pb.RunStreamRequest(task=DOWN_TASK), timeout=30
        )
        events = stream_events(call)
    answer = next(e.final_answer for e in events if e.HasField("final_answer") and e.depth == 0)
    assert "unavailable" in answer.answer_text  # the manager carried on with what it had
    assert message in texts(events)
    assert calls.read_text().split() == ["start", "end"]  # tried once: it may have done work


@pytest.mark.parametrize("fault_server", ["hang"], indirect=True)
def test_a_hanging_specialist_costs_the_caller_its_deadline_and_no_more(
    mesh_dir: Path, fault_server: tuple[str, Path]
) -> None:
    address, calls = fault_server
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_ADDRESS_RESEARCH_SPECIALIST": address}
    with MeshProcesses(config, only=("manager",), env=env) as mesh:
        manager = stub(mesh.addresses["manager"][0])
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            manager.Run(pb.RunRequest(task=DOWN_TASK), timeout=3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        wait_until(lambda: calls.read_text().split() == ["start", "end"])  # let go, not retried
        # The manager is free again: its next call gets an answer.
        card = manager.Describe(pb.DescribeRequest(), timeout=5).card
        assert card.name == "manager"


MODEL_TASK = "What is 7!?"


@pytest.fixture
def model_endpoint() -> Iterator[ReplayServer]:
    answer = ModelResponse(ChatMessage("assistant", code("final_answer(factorial(7))")),
                           TokenUsage(50, 10))  # fmt: skip
    with ReplayServer(Cassette.from_responses([answer], task=MODEL_TASK)) as server:
        yield server


def test_model_endpoint_faults_reach_the_caller_as_clear_statuses(
    model_endpoint: ReplayServer, tmp_path: Path
) -> None:
    with litellm_math_service(model_endpoint.api_base, tmp_path) as mesh:
        math = stub(mesh.addresses["math_specialist"][0])

        def run(timeout: float = 30, run_id: str = "") -> Any:
            return math.Run(pb.RunRequest(task=MODEL_TASK, run_id=run_id), timeout=timeout)

        for faults in ((429, 500), ("garbage",)):  # retried, then answered
            model_endpoint.inject_faults(*faults)
            before = len(model_endpoint.requests)
            assert run().answer_json == "5040"
            assert len(model_endpoint.requests) - before == len(faults) + 1

        outcomes = {}
        for fault in ([500] * 4, ["garbage"] * 4):
            model_endpoint.inject_faults(*fault)
            with pytest.raises(grpc.RpcError) as err:
                run()
            outcomes[fault[0]] = (err.value.code(), err.value.details())
        assert outcomes[500][0] == grpc.StatusCode.UNAVAILABLE
        assert "after 4 attempt(s)" in outcomes[500][1]
        assert outcomes["garbage"][0] == grpc.StatusCode.UNAVAILABLE, outcomes["garbage"]
        assert "gpt-4o-mini" in outcomes["garbage"][1]

        # `mesh run` says the model failed, not that the mesh is down (it is up).
        model_endpoint.inject_faults(*[500] * 4)
        env = {**os.environ, "MESH_ADDRESS_MATH_SPECIALIST": mesh.addresses["math_specialist"][0]}
        told = subprocess.run([str(Path(sys.executable).parent / "mesh"), "run", MODEL_TASK,
                               "--config", str(tmp_path / "mesh.toml")], capture_output=True,
                              text=True, env=env, timeout=60)  # fmt: skip
        assert told.returncode == 1 and "gpt-4o-mini" in told.stderr
        assert "Is the mesh up?" not in told.stderr

        model_endpoint.inject_faults("hang")  # the model never answers: the deadline decides
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            run(timeout=2, run_id="hung")
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 4
        # The service gave up on the model call at the run's deadline, not the model timeout.
        finished = wait_until(lambda: [e for e in read_run(default_audit_dir(), "hung")
                                       if e["event"] == "RunFinished"], timeout_s=10)  # fmt: skip
        assert finished[0]["duration_s"] < 4
        assert finished[0]["error"]["reason"] in ("deadline_exceeded", "run_cancelled")
        assert run().answer_json == "5040"  # and serves the next caller


def test_cancel_aborts_the_model_request_in_flight(
    model_endpoint: ReplayServer, tmp_path: Path
) -> None:
    with litellm_math_service(model_endpoint.api_base, tmp_path) as mesh:
        math = stub(mesh.addresses["math_specialist"][0])
        model_endpoint.inject_faults("hang")  # the model takes its time answering
        call = math.RunStream(pb.RunStreamRequest(task=MODEL_TASK, run_id="aborted"), timeout=20)
        wait_until(lambda: model_endpoint.requests)
        math.Cancel(pb.CancelRequest(run_id="aborted"), timeout=5)
        events: list[pb.RunEvent] = []
        with pytest.raises(grpc.RpcError) as err:
            for response in call:
                events += response.events
        assert err.value.code() == grpc.StatusCode.CANCELLED
        wait_until(lambda: model_endpoint.abandoned, timeout_s=5)  # the request was closed
        kinds = [e.WhichOneof("kind") for e in events]
        assert "model_output" not in kinds and "final_answer" not in kinds
        assert kinds[-1] == "run_finished"
        assert events[-1].run_finished.error.reason == "run_cancelled"


SPIN_THEN_RECOVER = "Spin, then recover."
SPINNER_CONFIG = """
[mesh]
entry = "spinner"
replay = "always"
[agents.spinner]
kind = "code"
description = "Spins."
address = "127.0.0.1:0"
cassette = "spinner.jsonl"
"""


def test_a_jail_killed_from_outside_is_an_observation_and_the_next_step_gets_a_new_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "mesh.toml").write_text(SPINNER_CONFIG)
    spin, recover = code("while True:\n    pass"), code('final_answer("recovered")')
    (tmp_path / "spinner.jsonl").write_text(cassette_lines(SPIN_THEN_RECOVER, spin, recover))
    with MeshProcesses(load_mesh_config(tmp_path / "mesh.toml")) as mesh:
        service = mesh.services[0].process.pid
        call = stub(mesh.addresses["spinner"][0]).RunStream(
            pb.RunStreamRequest(task=SPIN_THEN_RECOVER), timeout=60
        )
        events: list[pb.RunEvent] = []
        for response in call:
            events += response.events
            if any(e.HasField("code_action") for e in response.events):
                break  # the spinning snippet is on its way into the jail
        killed = jails(service)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        events += stream_events(call)
        assert killed
        answer = next(e.final_answer for e in events if e.HasField("final_answer"))
        assert answer.answer_text == "recovered"
        assert "jail" in texts(events).lower() or "sandbox" in texts(events).lower()
        left = jails(service)
    assert not alive(left)  # stopping the service took its fresh jails with it


def jails(service: int) -> set[int]:
    """The nsjail processes under ``service``."""
    found = set()
    for pid in descendants(service):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nsjail":
                found.add(pid)
        except OSError:
            continue
    return found


def test_a_specialist_killed_mid_run_is_an_observation_and_its_work_is_not_redone(
    mesh_dir: Path,
) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(config, only=("manager", "slow_specialist")) as mesh:
        specialist = next(s for s in mesh.services if s.agent == "slow_specialist").process.pid
        call = stub(mesh.addresses["manager"][0]).RunStream(
            pb.RunStreamRequest(task=LOST_TASK), timeout=60
        )
        events = []
        for response in call:
            events += response.events
            if any(e.depth == 1 and e.HasField("code_action") for e in response.events):
                break  # the specialist's snippet is spinning in its jail
        below_specialist = descendants(specialist)
        os.kill(specialist, signal.SIGKILL)
        started = time.monotonic()
        events += stream_events(call)
        assert time.monotonic() - started < 5  # noticed at once, not at the deadline
        answer = next(e.final_answer for e in events if e.HasField("final_answer") and e.depth == 0)
        assert answer.answer_text == "The slow specialist was lost mid-task."
        assert "slow_specialist at 127.0.0.1:" in texts(events)  # the model was told
        # The stream is still true: the dead specialist's run and its tool call end, failed.
        domain = [e for m in events if (e := event_from_proto(m)) is not None]
        assert stream_problems(domain) == []
        lost = next(e for e in domain if isinstance(e, RunFinished) and e.depth == 1)
        assert lost.agent == "slow_specialist" and lost.error is not None
        assert (lost.error.reason, lost.error.retryable) == ("agent_unavailable", True)
        assert below_specialist
        wait_until(lambda: not alive(below_specialist))  # its jails died with it
        runs = [e for e in _audit_entries() if e["event"] == "RunStarted"
                and e["agent"] == "slow_specialist"]  # fmt: skip
        assert len(runs) == 1  # not idempotent: the manager did not send it again


def test_the_manager_killed_mid_run_frees_the_specialist_and_restarts_clean(
    mesh_dir: Path,
) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(config, only=("slow_specialist",)) as specialists:
        slow = specialists.addresses["slow_specialist"][0]
        env = {"MESH_ADDRESS_SLOW_SPECIALIST": slow}
        manager = MeshProcesses(config, only=("manager",), env=env).start()
        try:
            manager_pid = manager.services[0].process.pid
            below_manager = descendants(manager_pid)
            call = stub(manager.addresses["manager"][0]).RunStream(
                pb.RunStreamRequest(task=SLOW_TASK, run_id="killed-mid-run"), timeout=60
            )
            delegated = next(e for r in call for e in r.events
                             if e.depth == 1 and e.HasField("code_action"))  # fmt: skip
            os.kill(manager_pid, signal.SIGKILL)  # mid-run, no goodbye
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                list(call)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 5
            wait_until(lambda: not alive(below_manager))  # the manager's jails died with it
            # The specialist saw its caller go: the spinning run is cancelled, its slot free.
            ended = wait_until(lambda: [e for e in read_run(default_audit_dir(), delegated.run_id)
                                        if e["event"] == "RunFinished"])  # fmt: skip
            assert ended[0]["error"]["reason"] == "run_cancelled"
        finally:
            manager.stop()

        restarted = MeshProcesses(config, only=("manager",), env=env).start()
        try:
            again = stub(restarted.addresses["manager"][0])
            # The caller retries the killed run by its id: refused, since it may have had effects.
            with pytest.raises(grpc.RpcError) as err:
                list(again.RunStream(pb.RunStreamRequest(task=SLOW_TASK, run_id="killed-mid-run"),
                                     timeout=30))  # fmt: skip
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "has not finished" in (err.value.details() or "")
            replies = [again.Run(pb.RunRequest(task=DOWN_TASK, run_id="answered"), timeout=30)
                       for _ in range(2)]  # fmt: skip
            assert "unavailable" in replies[0].answer_text
            assert replies[1] == replies[0]  # the retry got the recorded answer...
        finally:
            restarted.stop()
        entries = _audit_entries()
        started = [(e["agent"], e["run_id"]) for e in entries if e["event"] == "RunStarted"]
        assert started.count(("manager", "answered")) == 1  # ...and was not run again
        assert started.count(("manager", "killed-mid-run")) == 1
        runs = [e for e in _audit_entries() if e["event"] == "RunStarted" and
                e["agent"] == "slow_specialist"]  # fmt: skip
        assert len(runs) == 1  # nobody re-ran the killed manager's delegated work


def _audit_entries() -> list[dict[str, Any]]:
    return [json.loads(line) for path in default_audit_dir().glob("*.jsonl")
            for line in path.read_text().splitlines()]  # fmt: skip
