"""Shared state in PostgreSQL, with real processes: replicas share the memo, the run ledger,
run records, cancellation and tool changes; and the database can die and come back under a
burst of writes and runs without a service being restarted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.events import RunFinished
from mesh.append_only import read_records
from mesh.errors import AlreadyExistsError
from mesh.host.run_record import RunStatus
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from mesh.rpc.security import MeshSecurity
from mesh.state.database import CONNECT_TIMEOUT_S
from tests.mesh_setup import (
    ADMIN_AUTH,
    ADMIN_TOKENS,
    SEED_SERVICES,
    SEED_TASK,
    bearer,
    write_tokens,
)
from tests.postgres_server import PostgresServer
from tests.support import wait_until

RESEARCH = """
[agents.research_specialist]
kind = "tool-calling"
description = "Finds facts with web search and remembers them in a durable memo."
address = ["127.0.0.1:0", "127.0.0.1:0"]
tools = ["memo", "web_search"]
cassette = "SEED/research_specialist/cassette.jsonl"
agent = "services.research_specialist.agent:build"
"""
SHARED_CONFIG = (
    (
        """
[mesh]
entry = "manager"
replay = "always"
replay_latency_ms = 150

ADMIN_AUTH

[agents.manager]
kind = "code"
description = "Plans the work and delegates it to the specialists."
address = ["127.0.0.1:0", "127.0.0.1:0"]
managed_agents = ["research_specialist", "math_specialist"]
cassette = "SEED/manager/cassette.jsonl"
max_steps = 8

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic and number theory."
address = "127.0.0.1:0"
tools = ["smallest_prime_factor", "factorial"]
cassette = "SEED/math_specialist/cassette.jsonl"
"""
        + RESEARCH
    )
    .replace("SEED", str(SEED_SERVICES))
    .replace("ADMIN_AUTH", ADMIN_AUTH)
)
BURST_CONFIG = ('[mesh]\nreplay = "always"\nreplay_latency_ms = 200\n' + RESEARCH).replace(
    "SEED", str(SEED_SERVICES)
)
TASK = (
    "Find the year gRPC was open-sourced and remember it in the memo under the key 'grpc_year'. "
    "Answer with the year only."
)


def as_caller(caller: str) -> MeshSecurity:
    return MeshSecurity(client_token=ADMIN_TOKENS[caller])


def audit_events(path: Path, event: str, run_id: str) -> int:
    """How many ``event`` entries of ``run_id`` one replica's audit file holds."""
    if not path.exists():
        return 0
    return sum(1 for e in read_records(path) if e["event"] == event and e["run_id"] == run_id)


def runs_started(path: Path) -> int:
    return sum(1 for e in read_records(path) if e["event"] == "RunStarted") if path.exists() else 0


def no_tracebacks(logs: Path) -> None:
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"


def test_replicas_share_memo_ledger_and_tool_changes(state_dsn: str, tmp_path: Path) -> None:
    write_tokens(tmp_path)
    (tmp_path / "mesh.toml").write_text(SHARED_CONFIG)
    config = load_mesh_config(tmp_path / "mesh.toml")
    audit = tmp_path / "audit"
    env = {"MESH_STATE_DSN": state_dsn, "MESH_AUDIT_DIR": str(audit)}
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs") as mesh:
        research = [s for s in mesh.services if s.agent == "research_specialist"]
        managers = [s for s in mesh.services if s.agent == "manager"]
        assert len(research) == 2 and len(managers) == 2
        a, b = research
        on_a = AgentClient(a.address, agent="research_specialist", security=as_caller("tester"))
        on_b = AgentClient(b.address, agent="research_specialist", security=as_caller("tester"))
        channels = [grpc.insecure_channel(r.address) for r in research]
        stub_a, stub_b = (agent_pb2_grpc.AgentServiceStub(c) for c in channels)  # type: ignore[no-untyped-call]

        # The memo: written on one replica, read (and overwritten) on the other.
        on_a.call_tool("memo", {"action": "set", "key": "shared", "value": {"n": 1}})
        assert on_b.call_tool("memo", {"action": "get", "key": "shared"}) == {"n": 1}
        on_b.call_tool("memo", {"action": "set", "key": "shared", "value": {"n": 2}})
        assert on_a.call_tool("memo", {"action": "get", "key": "shared"}) == {"n": 2}

        # The ledger: a run id run on A and retried on B is answered from the record.
        first = stub_a.Run(pb.RunRequest(task=TASK, run_id="retried-1"), timeout=30,
                           metadata=bearer("tester"))  # fmt: skip
        assert first.answer_text == "2015" and first.run_id == "retried-1"
        again = stub_b.Run(pb.RunRequest(task=TASK, run_id="retried-1"), timeout=30,
                           metadata=bearer("tester"))  # fmt: skip
        assert again == first  # the same recorded response, byte for byte
        with pytest.raises(AlreadyExistsError):  # another task under that id, on either
            on_b.run("Something else entirely.", run_id="retried-1")
        a_audit = audit / f"research_specialist-{a.process.pid}.jsonl"
        b_audit = audit / f"research_specialist-{b.process.pid}.jsonl"
        assert audit_events(a_audit, "RunStarted", "retried-1") == 1
        assert audit_events(b_audit, "RunStarted", "retried-1") == 0  # B did not run it again
        assert on_b.get_run("retried-1").status is RunStatus.SUCCEEDED  # A's run, read on B

        # Cancellation and watches reach the replica that holds the run.
        record, _ = on_a.start_run(TASK, run_id="cancelled-1")
        assert record.status in (RunStatus.QUEUED, RunStatus.RUNNING)
        assert on_b.cancel("cancelled-1")[0] is True
        events = list(on_b.watch_run("cancelled-1", timeout_s=20))  # watched on B, held by A
        ends = [e for e in events if isinstance(e, RunFinished) and e.depth == 0]
        assert len(ends) == 1 and ends[0].error is not None
        assert ends[0].error.reason == "run_cancelled"
        assert on_b.get_run("cancelled-1").status is RunStatus.CANCELLED
        assert on_a.get_run("cancelled-1").status is RunStatus.CANCELLED
        assert audit_events(b_audit, "RunStarted", "cancelled-1") == 0

        # The seed task through two managers, round robin, over two research replicas.
        with AgentClient(mesh.addresses["manager"], agent="manager",
                         security=as_caller("tester")) as manager:  # fmt: skip
            for _ in range(4):
                outcome = manager.run(SEED_TASK, timeout_s=60)
                assert str(outcome.answer).startswith("gRPC was open-sourced in 2015"), outcome
        for replica in managers:  # both managers served
            assert runs_started(audit / f"manager-{replica.process.pid}.jsonl") >= 1
        assert on_b.call_tool("memo", {"action": "get", "key": "grpc_year"}) == 2015

        # A tool added on A reaches B within about a second: B lists it, and calls it.
        math = AgentClient(mesh.addresses["math_specialist"], security=as_caller("tester"))
        factorial = next(t for t in math.list_tools() if t["name"] == "factorial")
        math.close()
        assert "factorial" not in {t["name"] for t in on_b.list_tools()}
        admin_a = AgentClient(a.address, agent="research_specialist", security=as_caller("admin"))
        added = time.monotonic()
        change = admin_a.add_tool(factorial, mesh.addresses["math_specialist"][0])
        assert change.action == "added" and change.caller == "admin"
        wait_until(lambda: "factorial" in {t["name"] for t in on_b.list_tools()}, timeout_s=2)
        assert time.monotonic() - added < 2
        assert "factorial" in {t["name"] for t in on_b.describe().tools}
        assert on_b.call_tool("factorial", {"n": 5}) == 120
        assert [c.tool for c in on_b.tool_history() if c.action == "added"] == ["factorial"]
        admin_a.remove_tool("factorial")
        wait_until(lambda: "factorial" not in {t["name"] for t in on_b.list_tools()}, timeout_s=2)
        for client in (on_a, on_b, admin_a):
            client.close()
        for channel in channels:
            channel.close()
    no_tracebacks(tmp_path / "logs")


@dataclass
class Burst:
    """What the writers saw: acknowledged memo keys and finished runs, every refusal, and
    the runs in flight (run id, when it was asked for)."""

    keys: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    failures: list[tuple[str, str, grpc.StatusCode, str, float]] = field(default_factory=list)
    """(what, key or run id, status, details, when refused) of each failed call."""
    running: dict[str, float] = field(default_factory=dict)
    wrong_answers: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked(self, into: set[str], item: str) -> None:
        with self.lock:
            into.add(item)

    def failed(self, what: str, item: str, err: grpc.RpcError) -> None:
        with self.lock:
            self.failures.append((what, item, err.code(), err.details() or "", time.monotonic()))

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.keys), len(self.runs)

    def finished(self) -> set[str]:
        with self.lock:
            return set(self.runs)

    def runs_under_way(self, for_s: float) -> int:
        """How many runs have been going for at least ``for_s`` (past their ledger claim)."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for asked in self.running.values() if now - asked >= for_s)


def write_memo(stub: Any, prefix: str, burst: Burst) -> None:
    i = 0
    while not burst.stop.is_set():
        key, i = f"{prefix}-{i}", i + 1
        arguments = json.dumps({"action": "set", "key": key, "value": i})
        try:
            stub.CallTool(pb.CallToolRequest(name="memo", arguments_json=arguments), timeout=10)
        except grpc.RpcError as err:
            burst.failed("memo", key, err)
            burst.stop.wait(0.05)
            continue
        burst.acked(burst.keys, key)


def start_runs(stub: Any, prefix: str, burst: Burst) -> None:
    i = 0
    while not burst.stop.is_set():
        run_id, i, asked = f"{prefix}-{i}", i + 1, time.monotonic()
        with burst.lock:
            burst.running[run_id] = asked
        try:
            reply = stub.Run(pb.RunRequest(task=TASK, run_id=run_id), timeout=RUN_TIMEOUT_S)
        except grpc.RpcError as err:
            burst.failed("run", run_id, err)
            burst.stop.wait(0.05)
            continue
        finally:
            with burst.lock:
                del burst.running[run_id]
        if reply.answer_text != "2015":
            burst.wrong_answers.append(f"{run_id}: {reply.answer_text!r}")
        burst.acked(burst.runs, run_id)


def refused_while_down(stub: Any, what: str) -> grpc.RpcError:
    """The error of one memo write, or one run, asked for while the database is down."""
    try:
        if what == "memo":
            arguments = json.dumps({"action": "set", "key": "while-down", "value": 0})
            stub.CallTool(pb.CallToolRequest(name="memo", arguments_json=arguments), timeout=10)
        else:
            stub.Run(pb.RunRequest(task=TASK, run_id=f"while-down-{id(stub)}"), timeout=10)
    except grpc.RpcError as err:
        return err
    raise AssertionError(f"a {what} call succeeded while the state database was down")


def finished_runs(audit: Path) -> set[str]:
    """The runs whose end the services' audit files hold."""
    return {e["run_id"] for path in audit.glob("*.jsonl") for e in read_records(path)
            if e["event"] == "RunFinished"}  # fmt: skip


def traceback_blocks(logs: Path) -> list[str]:
    """Each traceback in the services' logs, with the lines around it."""
    blocks = []
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if line.startswith("Traceback"):
                blocks.append(f"{log.name}:{n + 1}\n" + "\n".join(lines[max(0, n - 2) : n + 20]))
    return blocks


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.close()


RUN_TIMEOUT_S = 8


def test_the_database_killed_and_restarted_mid_burst(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    (tmp_path / "mesh.toml").write_text(BURST_CONFIG)
    config = load_mesh_config(tmp_path / "mesh.toml")
    audit = tmp_path / "audit"
    env = {"MESH_STATE_DSN": own_postgres.create_database("burst"), "MESH_AUDIT_DIR": str(audit)}
    burst = Burst()
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs") as mesh:
        channels = [grpc.insecure_channel(a) for a in mesh.addresses["research_specialist"]]
        stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
        writers = [(write_memo, stubs[w % 2], f"key-w{w}") for w in range(4)]
        writers += [(start_runs, stubs[w % 2], f"run-w{w}") for w in range(2)]
        threads = [threading.Thread(target=f, args=(s, p, burst)) for f, s, p in writers]
        for thread in threads:
            thread.start()
        try:
            # Mid-burst: memo writes going, and both runners inside a run (claimed, not ended).
            wait_until(lambda: burst.counts()[0] >= 150 and burst.counts()[1] >= 4
                       and burst.runs_under_way(0.1) == 2, timeout_s=20)  # fmt: skip
            killed = time.monotonic()
            own_postgres.kill()
            with burst.lock:
                in_flight = {r for r, asked in burst.running.items() if asked < killed}

            # While it is down: UNAVAILABLE, saying which database, briefly; on either replica.
            with ThreadPoolExecutor(4) as pool:
                calls = [(s, w) for s in stubs for w in ("memo", "run")]
                probes = list(pool.map(lambda a: refused_while_down(*a), calls))
            for err in probes:
                details = err.details() or ""
                assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), details)
                assert "state database" in details and own_postgres.dsn("burst") in details
                assert len(details) < 400 and "Traceback" not in details, details
            keys_before, runs_before = burst.counts()[0], burst.finished()
            # Down until the runs in flight have ended and their ledger entries have had the
            # time to fail (a connection is waited for CONNECT_TIMEOUT_S): deterministic.
            wait_until(lambda: in_flight <= finished_runs(audit), timeout_s=15)
            time.sleep(CONNECT_TIMEOUT_S + 0.5)
            # Nothing new is acknowledged while it is down; the runs that were going when it
            # died are answered (their ledger entries are finished when it is back).
            assert burst.counts()[0] == keys_before, "a memo write acknowledged while it was down"
            assert burst.finished() - runs_before <= in_flight

            own_postgres.start()  # the same data and port; the services are not restarted
            restarted = time.monotonic()
            wait_until(lambda: burst.counts()[0] >= keys_before + 100
                       and len(burst.finished() - runs_before) >= 4, timeout_s=20)  # fmt: skip
            recovered_s = time.monotonic() - restarted
        finally:
            burst.stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert not burst.wrong_answers, burst.wrong_answers

        # Every acknowledged write and run is there, whichever replica is asked.
        listing = pb.CallToolRequest(name="memo", arguments_json='{"action": "list"}')
        listed = set(json.loads(stubs[1].CallTool(listing, timeout=10).result_json))
        assert burst.keys <= listed, f"lost {len(burst.keys - listed)} acknowledged writes"
        # A run that ended while the database was away has its record written once it is
        # back (its writer retries every 2 s at most): on either replica, soon.
        for n, run_id in enumerate(sorted(burst.runs)):
            for stub in (stubs[n % 2], stubs[(n + 1) % 2]):
                wait_until(lambda s=stub, r=run_id: s.GetRun(pb.GetRunRequest(run_id=r),
                           timeout=10).run.state == pb.RUN_STATE_SUCCEEDED,
                           timeout_s=15)  # fmt: skip

        # The runs in flight at the kill: each caller was answered, or refused UNAVAILABLE
        # (then its retry, now, is answered or runs it); none was left waiting.
        cut_off = {f[1]: f for f in burst.failures if f[1] in in_flight}
        retried: dict[str, str] = {}

        def retry(run_id: str) -> bool:
            """A retry is answered once the run's ledger entry is finished (a run that
            ended while the database was away has it finished when it is back)."""
            try:
                retried[run_id] = stubs[0].Run(pb.RunRequest(task=TASK, run_id=run_id),
                                               timeout=10).answer_text  # fmt: skip
            except grpc.RpcError as err:
                retried[run_id] = f"{err.code().name}: {err.details()}"
            return retried[run_id] == "2015"

        for run_id in sorted(cut_off):
            wait_until(lambda r=run_id: retry(r), timeout_s=20)
        states = {r: pb.RunState.Name(stubs[1].GetRun(pb.GetRunRequest(run_id=r), timeout=10)
                  .run.state) for r in sorted(cut_off)}  # fmt: skip
        for channel in channels:
            channel.close()

    # Refusals came only once the database was away, each UNAVAILABLE, short and plain: a
    # run in flight was answered or refused, never left waiting for its caller's deadline.
    assert all(f[4] >= killed for f in burst.failures), burst.failures[:5]
    wrong = [f[:4] for f in burst.failures if (
        f[2] != grpc.StatusCode.UNAVAILABLE or "state database" not in f[3]
        or len(f[3]) >= 400 or "Traceback" in f[3])]  # fmt: skip
    assert not wrong, wrong[:5]
    assert recovered_s < 20
    print(
        f"down {restarted - killed:.1f} s, recovered {recovered_s:.1f} s after the restart; "
        f"{len(burst.keys)} keys, {len(burst.runs)} runs, {len(burst.failures)} refusals; "
        f"in flight at the kill: {sorted(in_flight)}, answered {sorted(in_flight & burst.runs)}"
        f"; cut off: {retried}, states {states}"
    )
    assert traceback_blocks(tmp_path / "logs") == []
