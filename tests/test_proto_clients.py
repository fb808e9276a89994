"""A client built from ``protos/`` alone, as an author in another project would build it.

Python code is generated from the proto files into a directory of its own
and run in a separate interpreter, beside an installed smolmesh (whose Python
package is ``mesh``: the generated package must not clash with it). It calls
a real service and reads an error's declared detail without any smolmesh code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from grpc_tools import protoc

from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import ROOT

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


@pytest.fixture(scope="module")
def math_service(mesh_dir: Path) -> Iterator[str]:
    config = load_mesh_config(mesh_dir / "mesh.toml")  # free ports
    with MeshProcesses(config, only=("math_specialist",)) as mesh:
        yield mesh.addresses["math_specialist"][0]


def test_python_code_generated_from_the_protos_calls_a_service(
    math_service: str, tmp_path: Path
) -> None:
    protos = ROOT / "protos"
    sources = [str(p.relative_to(protos)) for p in protos.rglob("*.proto")]
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{protos}", f"-I{well_known}", f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", *sources]  # fmt: skip
    assert protoc.main(args) == 0
    done = subprocess.run([sys.executable, "-c", CLIENT, math_service], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"agent": "math_specialist", "result": "120",
                                       "code": "NOT_FOUND", "reason": "not_found",
                                       "retryable": False}  # fmt: skip
