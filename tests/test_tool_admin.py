"""Tools changed at run time over RPC: admin only, logged append-only, durable across restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from mesh import ToolCallingAgent
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.errors import AlreadyExistsError, NotFoundError, ToolExecutionError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.convert import definition_to_proto
from mesh.rpc.postgres_tool_changes import PostgresToolChangeLog
from mesh.rpc.remote_tool import RemoteTool
from mesh.rpc.security import MeshSecurity
from mesh.rpc.tool_admin import ChangeLog, ToolAdmin, ToolChangeLog
from mesh.rpc.tool_change import ToolChange
from mesh.state.database import Database
from tests.mesh_setup import ADMIN_AUTH, ADMIN_TOKENS, SEED_SERVICES, bearer, write_tokens
from tests.support import calls, scripted

CONFIG = """
[mesh]
replay = "always"
entry = "research_specialist"

ADMIN_AUTH

[agents.research_specialist]
kind = "tool-calling"
description = "Finds facts."
address = "127.0.0.1:0"
tools = ["web_search", "memo"]
cassette = "SEED/research_specialist/cassette.jsonl"
agent = "services.research_specialist.agent:build"

[agents.math_specialist]
kind = "code"
description = "Arithmetic."
address = "127.0.0.1:0"
tools = ["factorial", "smallest_prime_factor"]
cassette = "SEED/math_specialist/cassette.jsonl"
""".replace("SEED", str(SEED_SERVICES)).replace("ADMIN_AUTH", ADMIN_AUTH)
CUBE = {
    "description": "Cube of n, computed elsewhere.",
    "inputs": {"n": {"type": "integer", "description": "The number."}},
    "output_type": "integer",
}


@pytest.fixture(scope="module")
def admin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("admin")
    write_tokens(directory)
    (directory / "mesh.toml").write_text(CONFIG)
    return directory


@pytest.fixture(params=["files", "postgresql"])
def state(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the services a test starts keep their state (and so their tool changes): the
    embedded files, or a fresh PostgreSQL database; "" or its DSN. Ask for it before the
    services (their fixtures): they read it from the environment when they start."""
    if request.param == "files":
        return ""
    dsn: str = request.getfixturevalue("state_dsn")
    monkeypatch.setenv("MESH_STATE_DSN", dsn)
    return dsn


@pytest.fixture(params=["files", "postgresql"])
def change_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str],
               ChangeLog]]:  # fmt: skip
    """A maker of an agent's change log (a file, or rows of a database), each call a new
    handle on the same log, as a restarted service has."""
    if request.param == "files":
        yield lambda agent: ToolChangeLog(tmp_path / f"{agent}.jsonl")
        return
    database = Database(request.getfixturevalue("state_dsn")).open()
    yield lambda agent: PostgresToolChangeLog(database, agent)
    database.close()


def runtime_rows(state: str, agent: str) -> list[str]:
    """The change records the database holds for ``agent`` (its JSON text)."""
    with psycopg.connect(state) as db:
        rows = db.execute("SELECT record FROM mesh_tool_changes WHERE agent = %s ORDER BY id",
                          (agent,)).fetchall()  # fmt: skip
    return [str(record) for (record,) in rows]


@pytest.fixture
def math_service(admin_dir: Path) -> Iterator[MeshProcesses]:
    config = load_mesh_config(admin_dir / "mesh.toml")
    with MeshProcesses(config, only=("math_specialist",)) as mesh:
        yield mesh


def start_research(admin_dir: Path) -> MeshProcesses:
    config = load_mesh_config(admin_dir / "mesh.toml")
    return MeshProcesses(config, only=("research_specialist",), log_dir=admin_dir / "logs").start()


def stub(address: str) -> Any:
    return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]


def runtime_changes(history: pb.ToolHistoryResponse) -> list[pb.ToolChange]:
    """The changes made at run time (the history also holds the definitions it started with)."""
    runtime = (pb.TOOL_CHANGE_ACTION_ADDED, pb.TOOL_CHANGE_ACTION_REPLACED,
               pb.TOOL_CHANGE_ACTION_REMOVED)  # fmt: skip
    return [c for c in history.changes if c.action in runtime]


def mesh_tools(admin_dir: Path, *args: str, caller: str = "admin") -> Any:
    env = {**os.environ, "MESH_TOKEN": ADMIN_TOKENS[caller]}
    return subprocess.run(
        [sys.executable, "-m", "mesh", "tools", *args, "--config", str(admin_dir / "mesh.toml")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def tool_names(address: str) -> set[str]:
    tools = stub(address).ListTools(pb.ListToolsRequest(), timeout=10, metadata=bearer("tester"))
    return {t.name for t in tools.tools}


def test_an_admin_adds_replaces_and_removes_tools_and_the_changes_survive_a_restart(
    state: str, admin_dir: Path, math_service: MeshProcesses, tmp_path: Path
) -> None:
    math = math_service.addresses["math_specialist"][0]
    research = start_research(admin_dir)
    try:
        at = ["--agent-address", research.addresses["research_specialist"][0]]
        added = mesh_tools(admin_dir, "add", "research_specialist", "factorial", "--address",
                           math, *at)  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "added factorial -> " + math in added.stdout and "by admin" in added.stdout
        agent = stub(research.addresses["research_specialist"][0])
        # research has no factorial of its own: the call goes over RPC to math's CallTool
        reply = agent.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": 20}'),
                               timeout=10, metadata=bearer("tester"))  # fmt: skip
        assert json.loads(reply.result_json) == 2432902008176640000
        invalid = agent.CallTool.with_call  # arguments are checked here, before the remote call
        with pytest.raises(grpc.RpcError) as err:
            invalid(pb.CallToolRequest(name="factorial", arguments_json='{"n": "x"}'),
                    timeout=10, metadata=bearer("tester"))  # fmt: skip
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        again = mesh_tools(admin_dir, "add", "research_specialist", "factorial", "--address",
                           math, *at)  # fmt: skip
        assert again.returncode == 1 and "already_exists" in again.stderr
        (tmp_path / "cube.json").write_text(json.dumps(CUBE))
        replaced = mesh_tools(admin_dir, "add", "research_specialist", "factorial", "--replace",
                              "--schema", str(tmp_path / "cube.json"), "--address", math,
                              *at)  # fmt: skip
        assert replaced.returncode == 0 and "replaced factorial" in replaced.stdout
        removed = mesh_tools(admin_dir, "remove", "research_specialist", "web_search", *at)
        assert removed.returncode == 0 and "removed web_search" in removed.stdout

        history = mesh_tools(admin_dir, "history", "research_specialist", "--json", *at)
        changes = [json.loads(line) for line in history.stdout.splitlines()]
        assert [(c["action"], c["tool"], c["caller"]) for c in changes] == [
            ("configured", "", "config"),  # the definition it started with
            ("added", "factorial", "admin"),
            ("replaced", "factorial", "admin"),
            ("removed", "web_search", "admin"),
        ]
        assert changes[1]["schema_sha256"] != changes[2]["schema_sha256"]
        assert len(changes[1]["schema_sha256"]) == 64 and changes[3]["schema_sha256"] == ""
    finally:
        research.stop()

    research = start_research(admin_dir)  # the log is replayed over the configured tools
    try:
        address = research.addresses["research_specialist"][0]
        assert tool_names(address) == {"factorial", "memo"}
        card = stub(address).Describe(pb.DescribeRequest(), timeout=10, metadata=bearer("tester"))
        factorial = next(t for t in card.card.tools if t.name == "factorial")
        assert factorial.description == CUBE["description"]
    finally:
        research.stop()
    files = list(Path(os.environ["MESH_TOOL_LOG_DIR"]).glob("research_specialist.*"))
    if state:  # the log is the database's: every replica of the agent reads the same one
        assert files == []
        records = runtime_rows(state, "research_specialist")
        assert [json.loads(r)["action"] for r in records][-3:] == ["added", "replaced", "removed"]
        log_text = "".join(records)
    else:
        log_text = "".join(p.read_text() for p in files)
    assert '"factorial"' in log_text
    assert not any(token in log_text for token in ADMIN_TOKENS.values())


def test_only_an_admin_may_change_tools(state: str, admin_dir: Path, mesh_dir: Path) -> None:
    research = start_research(admin_dir)
    spec = definition_to_proto({"name": "cube", **CUBE})
    request = pb.AddToolRequest(spec=spec, address="127.0.0.1:1")
    try:
        agent = stub(research.addresses["research_specialist"][0])
        for metadata, code in [((), grpc.StatusCode.UNAUTHENTICATED),
                               (bearer("tester"), grpc.StatusCode.PERMISSION_DENIED)]:  # fmt: skip
            for call in (agent.AddTool, lambda r, **kw: agent.RemoveTool(
                    pb.RemoveToolRequest(name="memo"), **kw)):  # fmt: skip
                with pytest.raises(grpc.RpcError) as err:
                    call(request, timeout=10, metadata=metadata)
                assert err.value.code() == code
        history = agent.ToolHistory(pb.ToolHistoryRequest(), timeout=10, metadata=bearer("tester"))
        assert runtime_changes(history) == []  # refused calls changed nothing
        assert "memo" in tool_names(research.addresses["research_specialist"][0])
    finally:
        research.stop()

    # A mesh without tokens has no admin at all: nobody may change tools.
    with MeshProcesses(load_mesh_config(mesh_dir / "mesh.toml"), only=("math_specialist",)) as m:
        open_stub = stub(m.addresses["math_specialist"][0])
        with pytest.raises(grpc.RpcError) as err:
            open_stub.AddTool(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs an authenticated admin" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": ""}, "address must be host:port"),
        ({"spec": pb.ToolSpec(name="final_answer", description="x", output_type=pb.VALUE_TYPE_ANY)},
         "final_answer is built in"),
        ({"spec": pb.ToolSpec(name="bad name", description="x", output_type=pb.VALUE_TYPE_ANY)},
         "must be a Python identifier"),
        ({"spec": pb.ToolSpec(name="t", description="x", output_type=pb.VALUE_TYPE_ANY, inputs=[
            pb.ToolInput(name="a", description="a", required=True)])},  # no type
         "type 'unspecified' is not one of"),
        ({"spec": pb.ToolSpec(name="t", description="x", output_type=pb.VALUE_TYPE_ANY, inputs=[
            pb.ToolInput(name="a", type=pb.VALUE_TYPE_STRING, description="a",
                         required=True)] * 2)},
         "declared twice"),
        ({"spec": pb.ToolSpec(name="t", description="x", output_type=pb.VALUE_TYPE_ANY, inputs=[
            pb.ToolInput(name="a", type=pb.VALUE_TYPE_STRING, description="a",
                         enum_json="[oops")])},
         "invalid tool spec"),
        ({"spec": pb.ToolSpec(name="t", description="x", output_type=pb.VALUE_TYPE_ANY, inputs=[
            pb.ToolInput(name="a", type=pb.VALUE_TYPE_STRING, description="a",
                         default_json="[" * 50_000 + "]" * 50_000)])},
         "nested too deeply"),
        ({"remote_name": "no such"}, "is not an identifier"),
    ],
)  # fmt: skip
def test_ill_formed_tool_changes_are_invalid_arguments_and_change_nothing(
    admin_dir: Path, math_service: MeshProcesses, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"spec": definition_to_proto({"name": "cube", **CUBE}),
                              "address": "127.0.0.1:1", **change}  # fmt: skip
    agent = stub(math_service.addresses["math_specialist"][0])
    with pytest.raises(grpc.RpcError) as err:
        agent.AddTool(pb.AddToolRequest(**fields), timeout=10, metadata=bearer("admin"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    history = agent.ToolHistory(pb.ToolHistoryRequest(), timeout=10, metadata=bearer("admin"))
    assert runtime_changes(history) == []


def test_a_model_uses_a_remote_tool_and_reads_its_failures(math_service: MeshProcesses) -> None:
    address = math_service.addresses["math_specialist"][0]
    definition = {"name": "factorial", "description": "n!", "output_type": "integer",
                  "inputs": {"n": {"type": "integer", "description": "n"}}}  # fmt: skip
    security = MeshSecurity(client_token=ADMIN_TOKENS["tester"])
    model = scripted(
        calls(("factorial", {"n": 5})),
        calls(("factorial", {"n": 5000})),  # math refuses n > 1000: an observation, not a crash
        calls(("final_answer", {"answer": "done"})),
    )
    agent = ToolCallingAgent(tools=[RemoteTool(definition, address, security=security)],
                             model=model)  # fmt: skip
    result = agent.run("Compute 5!", return_full_result=True)
    assert result.output == "done"
    observations = [s.observation or "" for s in result.steps]
    assert "120" in observations[0]
    # Untrusted by default (the wire does not say how it is marked there): read fenced.
    assert '<tool_result tool="factorial">\n120\n</tool_result>' in observations[0]
    assert '<tool_result tool="factorial">' in observations[1]  # its server's error, too
    assert "factorial" in observations[1] and "1000" in observations[1]

    math_service.stop()  # the remote is gone: the tool fails clearly and quickly
    with pytest.raises(ToolExecutionError, match="UNAVAILABLE"):
        RemoteTool(definition, address, timeout_s=5).call({"n": 3})


def test_changes_are_logged_before_they_apply_and_replayed_over_the_configured_tools(
    change_log: Callable[[str], ChangeLog],
) -> None:
    def agent() -> ToolCallingAgent:
        return ToolCallingAgent([RemoteTool({**CUBE, "name": "configured"}, "127.0.0.1:1")],
                                scripted(), name="research", description="Finds.")  # fmt: skip

    admin = ToolAdmin(agent(), change_log("research"))
    assert admin.restore() == 0 and admin.history() == []
    cube = {"name": "cube", **CUBE}
    added = admin.add(cube, "127.0.0.1:1", caller="admin")
    with pytest.raises(AlreadyExistsError):
        admin.add(cube, "127.0.0.1:1", caller="admin")
    replaced = admin.add({**cube, "description": "Cube."}, "127.0.0.1:2", caller="admin",
                         replace=True)  # fmt: skip
    removed = admin.remove("configured", caller="tester")
    with pytest.raises(NotFoundError):
        admin.remove("configured", caller="admin")
    assert admin.history() == [added, replaced, removed]  # refusals recorded nothing
    assert added.schema_sha256 != replaced.schema_sha256 and removed.caller == "tester"
    positions = [p for p, _ in change_log("research").read_after(0)]
    assert positions == sorted(set(positions)) and len(positions) == 3
    assert [c for _, c in change_log("research").read_after(positions[0])] == [replaced, removed]

    restarted = ToolAdmin(agent(), change_log("research"))
    assert restarted.restore() == 3
    assert set(restarted.agent.tools) == {"cube", "final_answer"}
    tool = restarted.agent.tools["cube"]
    assert isinstance(tool, RemoteTool) and tool.address == "127.0.0.1:2"
    assert tool.description == "Cube."
    assert restarted.position == positions[-1]
    other = ToolAdmin(agent(), change_log("writer"))  # another agent: a log of its own
    assert other.restore() == 0 and "configured" in other.agent.tools


def test_the_change_log_skips_a_line_torn_by_a_crash(tmp_path: Path) -> None:
    log = ToolChangeLog(tmp_path / "a.jsonl")
    change = ToolChange(timestamp=1.0, agent="a", action="removed", tool="memo", caller="admin")
    log.append(change)
    with open(log.path, "a") as torn:
        torn.write('{"timestamp": 2.0, "agent": "a", "act')
    assert log.read() == [change]
    later = ToolChange(timestamp=3.0, agent="a", action="removed", tool="x", caller="admin")
    log.append(later)  # starts on a line of its own, so the torn bytes cannot swallow it
    assert log.read() == [change, later]
