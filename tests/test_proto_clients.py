"""A client built from ``protos/`` alone, as an author in another project would build it.

Python code is generated from the proto files into a directory of its own
and run in a separate interpreter: once beside an installed smolmesh (whose
Python package is ``mesh``: the generated package must not clash with it),
and once in an interpreter that has only grpcio, protobuf and grpcio-status
(no smolmesh at all), where it does what the contract promises: start a run,
drop the stream, find the run, rejoin it, cancel it, continue a conversation,
and read every error's reason and retryable flag.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import google.protobuf
import google.rpc
import grpc
import grpc_status
import pytest
import typing_extensions
from grpc_tools import protoc

from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import ROOT
from tests.runs_setup import FIRST_TURN, LONG_TASK, SECOND_TURN

CLIENT = """
import json, sys
import grpc
from grpc_status import rpc_status
from smolmesh.v1 import agent_pb2 as pb, agent_pb2_grpc
from mesh import CodeAgent  # smolmesh (package `mesh`) still imports: nothing shadows it

stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(sys.argv[1]))
card = stub.Describe(pb.DescribeRequest(), timeout=10).card
result = stub.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": 5}'), timeout=10)
try:
    stub.CallTool(pb.CallToolRequest(name="nope"), timeout=10)
except grpc.RpcError as err:
    code, detail = err.code().name, pb.ErrorDetail()
    rpc_status.from_call(err).details[0].Unpack(detail)
print(json.dumps({"agent": card.name, "result": result.result_json, "code": code,
                  "reason": detail.reason, "retryable": detail.retryable}))
"""


LIFECYCLE = """
import json, sys
import grpc
from grpc_status import rpc_status
from smolmesh.v1 import agent_pb2 as pb, agent_pb2_grpc

try:
    import mesh
    sys.exit("smolmesh is importable: this is not a clean environment")
except ImportError:
    pass

address, long_task, first_turn, second_turn = sys.argv[1:5]
stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(address))
out = {}

def detail_of(err):
    detail = pb.ErrorDetail()
    rpc_status.from_call(err).details[0].Unpack(detail)
    return [err.code().name, detail.reason, detail.retryable]

# Start a run without waiting; watch it and drop the stream after two events.
run = stub.StartRun(pb.StartRunRequest(task=long_task, run_id="clean-1"), timeout=10).run
out["started"] = pb.RunState.Name(run.state)
watch = stub.WatchRun(pb.WatchRunRequest(run_id="clean-1"), timeout=60)
seen = []
for response in watch:
    seen += [e.index for e in response.events]
    if len(seen) >= 2:
        break
watch.cancel()
# Find it: by id, and in the list of running runs.
found = stub.GetRun(pb.GetRunRequest(run_id="clean-1"), timeout=10).run
out["found"] = pb.RunState.Name(found.state)
running = stub.ListRuns(pb.ListRunsRequest(states=[pb.RUN_STATE_RUNNING]), timeout=10)
out["listed"] = "clean-1" in [r.run_id for r in running.runs]
# Rejoin where the stream stopped, cancel, and read the rest.
rejoined = stub.WatchRun(pb.WatchRunRequest(run_id="clean-1", start_index=seen[-1] + 1), timeout=60)
first = next(iter(rejoined))
out["resumed_where_it_stopped"] = first.events[0].index == seen[-1] + 1
out["cancelled"] = stub.Cancel(pb.CancelRequest(run_id="clean-1"), timeout=10).cancelled
ends = [e for r in rejoined for e in r.events
        if e.WhichOneof("kind") == "run_finished" and e.depth == 0]
out["event_error"] = [ends[0].run_finished.error.reason, ends[0].run_finished.error.retryable]
ended = stub.GetRun(pb.GetRunRequest(run_id="clean-1"), timeout=10).run
out["ended"] = [pb.RunState.Name(ended.state), ended.error.reason]
again = stub.Cancel(pb.CancelRequest(run_id="clean-1"), timeout=10)
out["cancel_again"] = [again.cancelled, pb.RunState.Name(again.state)]
# A conversation: the second turn is answered only if the first is remembered.
stub.Run(pb.RunRequest(task=first_turn, session_id="clean-chat"), timeout=30)
second = stub.Run(pb.RunRequest(task=second_turn, session_id="clean-chat"), timeout=30)
out["second_turn"] = second.answer_json
# Errors: the declared detail of each.
for name, call in [
    ("unknown_run", lambda: stub.GetRun(pb.GetRunRequest(run_id="never-was"), timeout=10)),
    ("huge_id", lambda: stub.GetRun(pb.GetRunRequest(run_id="x" * 100_000), timeout=10)),
    ("reused_id", lambda: stub.StartRun(pb.StartRunRequest(task=second_turn, run_id="clean-1"),
                                        timeout=10)),
]:
    try:
        call()
        out[name] = "no error"
    except grpc.RpcError as err:
        out[name] = detail_of(err)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def math_service(mesh_dir: Path) -> Iterator[str]:
    config = load_mesh_config(mesh_dir / "mesh.toml")  # free ports
    with MeshProcesses(config, only=("math_specialist",)) as mesh:
        yield mesh.addresses["math_specialist"][0]


def generate(directory: Path) -> None:
    """Python code for the contract, from protos/ alone."""
    directory.mkdir(exist_ok=True)
    protos = ROOT / "protos"
    sources = [str(p.relative_to(protos)) for p in protos.rglob("*.proto")]
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{protos}", f"-I{well_known}", f"--python_out={directory}",
            f"--grpc_python_out={directory}", *sources]  # fmt: skip
    assert protoc.main(args) == 0


def test_python_code_generated_from_the_protos_calls_a_service(
    math_service: str, tmp_path: Path
) -> None:
    generate(tmp_path)
    done = subprocess.run([sys.executable, "-c", CLIENT, math_service], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"agent": "math_specialist", "result": "120",
                                       "code": "NOT_FOUND", "reason": "not_found",
                                       "retryable": False}  # fmt: skip


def test_a_client_without_smolmesh_starts_finds_rejoins_cancels_and_converses(
    runs_service: MeshProcesses, tmp_path: Path
) -> None:
    generated = tmp_path / "generated"
    generate(generated)
    runtime = tmp_path / "runtime"  # grpcio, protobuf, grpcio-status: nothing of smolmesh
    for module in (grpc, google.protobuf, google.rpc, grpc_status, typing_extensions):
        target = runtime / Path(*module.__name__.split("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(module, "__path__"):
            target.symlink_to(next(iter(module.__path__)), target_is_directory=True)
        else:
            target.with_suffix(".py").symlink_to(str(module.__file__))
    address = runs_service.addresses["math_specialist"][0]
    done = subprocess.run(
        [sys.executable, "-S", "-c", LIFECYCLE, address, LONG_TASK, FIRST_TURN, SECOND_TURN],
        capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{generated}:{runtime}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {
        "started": "RUN_STATE_QUEUED", "found": "RUN_STATE_RUNNING", "listed": True,
        "resumed_where_it_stopped": True, "cancelled": True,
        "event_error": ["run_cancelled", False],
        "ended": ["RUN_STATE_CANCELLED", "run_cancelled"],
        "cancel_again": [False, "RUN_STATE_CANCELLED"], "second_turn": "5040",
        "unknown_run": ["NOT_FOUND", "not_found", False],
        "huge_id": ["INVALID_ARGUMENT", "invalid_request", False],
        "reused_id": ["ALREADY_EXISTS", "already_exists", False],
    }  # fmt: skip
