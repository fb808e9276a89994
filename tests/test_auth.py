# ruff: noqa: E501  (stub constructions and parametrized cases read best on one line)
"""TLS, mutual TLS and bearer tokens: who may call what (a throwaway CA, made per test run)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.config import load_config
from mesh.errors import ConfigError, PermissionDeniedError, UnauthenticatedError
from mesh.launcher import MeshProcesses
from mesh.project import BUILTIN_TOOLS, load_mesh_config
from mesh.rpc.dev_credentials import write_dev_credentials
from mesh.rpc.status import error_from_rpc
from mesh.sandbox.nsjail import JAIL_ENV
from tests.mesh_setup import SEED_SERVICES, SEED_TASK, cassette_lines
from tests.support import code

TOKENS = {"manager": "mgr-" + "a" * 32, "ops": "ops-" + "b" * 32, "tester": "tst-" + "c" * 32}
CONFIG = """
[mesh]
replay = "always"
entry = "manager"

[auth]
tls_cert = "mesh.pem"
tls_key = "mesh.key"
tls_ca = "ca.pem"
require_client_cert = true
tokens_file = "tokens"
token_file = "manager.token"
[auth.permissions]
manager = ["*"]
tester = ["*"]
ops = ["Describe"]

[agents.manager]
kind = "code"
description = "Delegates."
address = "127.0.0.1:0"
managed_agents = ["research_specialist", "math_specialist"]
cassette = "SEED/manager/cassette.jsonl"

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
tools = ["smallest_prime_factor"]
cassette = "SEED/math_specialist/cassette.jsonl"
""".replace("SEED", str(SEED_SERVICES))
SNOOP_TASK = "Look for the mesh's tokens from inside the jail."
SNOOPER = """
[agents.snooper]
kind = "code"
description = "Model-written code that goes looking for secrets."
address = "127.0.0.1:0"
authorized_imports = ["os"]
cassette = "snooper.jsonl"
"""


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secure")
    write_dev_credentials(directory, tokens=TOKENS)
    (directory / "mesh.toml").write_text(CONFIG + SNOOPER)
    snoop = code(
        "import os\n"
        f"paths = {[str(directory / n) for n in ('tokens', 'manager.token')]!r}\n"
        "final_answer({'environ': dict(os.environ), 'cwd': os.listdir('.'),\n"
        "              'visible': [p for p in paths if os.path.exists(p)]})"
    )
    (directory / "snooper.jsonl").write_text(cassette_lines(SNOOP_TASK, snoop))
    return directory


@pytest.fixture(scope="module")
def secure_mesh(secure_dir: Path) -> Any:
    config = load_mesh_config(secure_dir / "mesh.toml")
    env = {"MESH_TOKEN": TOKENS["manager"], "MESH_AUDIT_DIR": str(secure_dir / "audit"),
           "MESH_TRACE_DIR": str(secure_dir / "traces")}  # fmt: skip
    with MeshProcesses(config, env=env, log_dir=secure_dir / "logs") as mesh:
        yield mesh


def channel(secure_dir: Path, address: str, *, client_cert: bool = True) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(secure_dir / "ca.pem").read_bytes(),
        private_key=(secure_dir / "mesh.key").read_bytes() if client_cert else None,
        certificate_chain=(secure_dir / "mesh.pem").read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(address, credentials)


def bearer(caller: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[caller]}"),)


def test_the_seed_scenario_runs_over_mutual_tls_with_tokens(
    secure_mesh: Any, secure_dir: Path
) -> None:
    manager = agent_pb2_grpc.AgentServiceStub(
        channel(secure_dir, secure_mesh.addresses["manager"][0])
    )  # type: ignore[no-untyped-call]
    reply = manager.Run(pb.RunRequest(task=SEED_TASK), timeout=60, metadata=bearer("tester"))
    assert reply.answer_text.startswith(
        "gRPC was open-sourced in 2015"
    )  # manager -> specialists too
    assert set(reply.usage_by_agent) == {"manager", "research_specialist", "math_specialist"}


@pytest.mark.parametrize(
    ("metadata", "method", "code", "message"),
    [
        ((), "Run", grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required"),
        ((("authorization", "Bearer not-a-real-token-000000"),), "Run",
         grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required"),
        ((("authorization", TOKENS["ops"]),), "Describe",
         grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required"),  # no scheme
        (bearer("ops"), "Run", grpc.StatusCode.PERMISSION_DENIED,
         "ops may not call /smolmesh.v1.AgentService/Run"),
        (bearer("ops"), "RunStream", grpc.StatusCode.PERMISSION_DENIED, "ops may not call"),
    ],
)  # fmt: skip
def test_callers_without_a_token_or_the_right_are_refused(
    secure_mesh: Any, secure_dir: Path, metadata: Any, method: str, code: Any, message: str
) -> None:
    stub = agent_pb2_grpc.AgentServiceStub(
        channel(secure_dir, secure_mesh.addresses["math_specialist"][0])
    )  # type: ignore[no-untyped-call]
    requests = {"Run": pb.RunRequest(task="x"), "RunStream": pb.RunStreamRequest(task="x"),
                "Describe": pb.DescribeRequest()}  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        result = getattr(stub, method)(requests[method], timeout=10, metadata=metadata)
        list(result) if method == "RunStream" else None
    assert err.value.code() == code and message in err.value.details()
    # The reason travels declared, in the rich status, and the client raises the same class.
    rebuilt = error_from_rpc(err.value, "math_specialist")
    expected = UnauthenticatedError if code == grpc.StatusCode.UNAUTHENTICATED else None
    assert type(rebuilt) is (expected or PermissionDeniedError)
    assert rebuilt.code == code.name.lower() and not rebuilt.retryable


def test_allowed_methods_and_health_probes_work(secure_mesh: Any, secure_dir: Path) -> None:
    math = channel(secure_dir, secure_mesh.addresses["math_specialist"][0])
    card = (
        agent_pb2_grpc.AgentServiceStub(math)
        .Describe(  # type: ignore[no-untyped-call]
            pb.DescribeRequest(), timeout=10, metadata=bearer("ops")
        )
        .card
    )
    assert card.name == "math_specialist"
    assert card.capabilities.tokens_required and card.capabilities.tool_admin
    health = health_pb2_grpc.HealthStub(math).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING  # no token needed


def test_plaintext_and_certificate_less_clients_cannot_connect(
    secure_mesh: Any, secure_dir: Path
) -> None:
    address = secure_mesh.addresses["math_specialist"][0]
    for client in (grpc.insecure_channel(address), channel(secure_dir, address, client_cert=False)):
        with pytest.raises(grpc.RpcError) as err:
            agent_pb2_grpc.AgentServiceStub(client).Describe(  # type: ignore[no-untyped-call]
                pb.DescribeRequest(), timeout=5, metadata=bearer("tester")
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tokens_never_reach_a_jail(secure_mesh: Any, secure_dir: Path) -> None:
    snooper = agent_pb2_grpc.AgentServiceStub(
        channel(secure_dir, secure_mesh.addresses["snooper"][0])
    )  # type: ignore[no-untyped-call]
    reply = snooper.Run(pb.RunRequest(task=SNOOP_TASK), timeout=60, metadata=bearer("tester"))
    seen = json.loads(reply.answer_json)
    assert "cwd" in seen  # the snooping code ran, with os, in the service's jail
    assert seen["environ"] == JAIL_ENV  # the service has $MESH_TOKEN; the jail only this
    assert seen["visible"] == []  # nor a view of the token files
    assert not any(token in reply.answer_json for token in TOKENS.values())


def test_tokens_never_reach_the_logs(secure_mesh: Any, secure_dir: Path) -> None:
    written = [p for d in ("logs", "audit", "traces") for p in (secure_dir / d).iterdir()]
    assert {p.parent.name for p in written} == {"logs", "audit", "traces"}
    text = "".join(p.read_text() for p in written)
    assert "Look for the mesh's tokens" in text  # the runs above were recorded...
    assert not any(token in text for token in TOKENS.values())  # ...and no token with them


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("tls_key = \"mesh.key\"\n", ""), "tls_cert and tls_key go together"),
        (("ops = [\"Describe\"]", "ops = [\"Describe\"]\nghost = [\"*\"]"), "callers without a token: ['ghost']"),
        (("tls_ca = \"ca.pem\"", "tls_ca = \"missing.pem\""), "auth.tls_ca: "),
        (("require_client_cert = true", "password = \"hunter2\""), "auth.password: unknown field"),
    ],
)  # fmt: skip
def test_auth_config_errors_are_named(
    secure_dir: Path, tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    for name in ("ca.pem", "mesh.pem", "mesh.key", "tokens", "manager.token"):
        (tmp_path / name).write_bytes((secure_dir / name).read_bytes())
    (tmp_path / "mesh.toml").write_text(CONFIG.replace(*change))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(tmp_path / "mesh.toml", frozenset(BUILTIN_TOOLS))


def test_short_tokens_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("manager short\n")
    (tmp_path / "mesh.toml").write_text(
        '[auth]\ntokens_file = "tokens"\n[agents.a]\nkind = "code"\ndescription = "x"\n'
        'address = "127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match="16 characters or more"):
        load_config(tmp_path / "mesh.toml", frozenset(BUILTIN_TOOLS))


def test_mesh_health_speaks_tls_as_its_config_says(
    secure_mesh: Any, secure_dir: Path, tmp_path: Path
) -> None:
    address = secure_mesh.addresses["math_specialist"][0]

    def health(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mesh", "health", *args, address],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip

    secure = health("--config", str(secure_dir / "mesh.toml"))
    assert secure.returncode == 0, secure.stderr
    plain = health()  # no mesh.toml here: plaintext, which the agent's TLS port refuses
    assert plain.returncode == 1 and "error (agent_unavailable)" in plain.stderr


def test_a_plaintext_health_port_answers_probes_and_nothing_else(secure_dir: Path) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        health_port = probe_socket.getsockname()[1]
    service = subprocess.Popen(
        [sys.executable, "-m", "mesh", "serve", "math_specialist", "--config",
         str(secure_dir / "mesh.toml"), "--address", "127.0.0.1:0",
         "--health-address", f"127.0.0.1:{health_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert service.stdout is not None
        port = service.stdout.readline().split()[-1]  # "SERVING math_specialist PORT"
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain:
            reply = health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=10)  # fmt: skip
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:  # the agent is not served there
                agent_pb2_grpc.AgentServiceStub(plain).Describe(  # type: ignore[no-untyped-call]
                    pb.DescribeRequest(), timeout=10, metadata=bearer("tester")
                )
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:  # ...and the agent's port
            with pytest.raises(grpc.RpcError) as err:  # still requires TLS
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        service.terminate()
        assert service.wait(timeout=30) == 0
