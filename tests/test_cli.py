"""``mesh run --local`` (one agent, no mesh), run as a user runs it: a separate process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from mesh import Cassette, ReplayServer
from mesh.config import load_config
from mesh.launcher import MeshProcesses
from mesh.project import BUILTIN_TOOLS, load_mesh_config
from tests.support import calls, code

MESH = str(Path(sys.executable).parent / "mesh")


def mesh(
    *args: str, tmp_path: Path, cwd: Path | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["MESH_MEMO_PATH"] = str(tmp_path / "memo.sqlite3")
    env.update(env_vars)
    return subprocess.run(
        [MESH, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


def test_run_without_a_key_replays_the_demo(tmp_path: Path) -> None:
    done = mesh("run", "--local", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "this is a REPLAY of a recorded run" in done.stderr
    assert "set OPENAI_API_KEY or pass --model / --api-base" in done.stderr
    assert "-> smallest_prime_factor(n=2021)" in done.stdout
    assert "<- memo: stored 'spf_2021'" in done.stdout
    assert "[assistant] final answer: 100 °C is 212 °F" in done.stdout
    assert "3 step(s), 3893 input + 191 output tokens" in done.stdout
    # The tools really ran: the memo holds what the replayed run stored.
    from mesh import MemoTool

    assert MemoTool(tmp_path / "memo.sqlite3")("get", "spf_2021") == 43


def test_a_task_without_a_model_fails_instead_of_replaying_another(tmp_path: Path) -> None:
    """A task of the user's own cannot be answered by a recording of another: it must not
    look as if it had been (exit 0 with someone else's answer)."""
    done = mesh("run", "--local", "What is the weather?", "--quiet", tmp_path=tmp_path)
    assert done.returncode == 1
    assert "no model is configured for 'What is the weather?': set OPENAI_API_KEY" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_a_missing_api_key_fails_at_once_naming_the_variable(tmp_path: Path) -> None:
    done = mesh("run", "--local", "Hello?", "--model", "anthropic/claude-sonnet-4-5",
                tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 1
    assert "no API key: set ANTHROPIC_API_KEY" in done.stderr
    assert done.stderr.count("\n") < 10 and "Traceback" not in done.stderr
    assert "attempt" not in done.stderr  # refused before any call, not retried


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Path(__file__).parent.parent / "mesh.toml"
        done = mesh("serve", "math_specialist", "--config", str(config), "--address",
                    f"127.0.0.1:{port}", tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_health_exits_0_for_a_serving_agent_and_1_saying_why_otherwise(
    mesh_dir: Path, tmp_path: Path
) -> None:
    """What a container's health check runs; in a directory without a mesh.toml (plaintext),
    and with the config the agent was started from."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{unused.getsockname()[1]}"
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(config, only=("math_specialist",), log_dir=tmp_path / "logs") as served:
        address = served.addresses["math_specialist"][0]
        alone = mesh("health", address, tmp_path=tmp_path, cwd=tmp_path)
        assert (alone.returncode, alone.stdout, alone.stderr) == (0, "", "")
        configured = mesh("health", "--config", str(mesh_dir / "mesh.toml"), address,
                          tmp_path=tmp_path, cwd=tmp_path)  # fmt: skip
        assert configured.returncode == 0, configured.stderr
    down = mesh("health", free, "--timeout", "2", tmp_path=tmp_path, cwd=tmp_path)
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.startswith(f"error (agent_unavailable): the agent at {free}: UNAVAILABLE")
    assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr


@pytest.mark.parametrize(
    ("agent", "variable", "what", "under"),
    [
        ("math_specialist", "MESH_TRACE_DIR", "trace directory", "traces"),
        ("math_specialist", "MESH_AUDIT_DIR", "audit directory", "audit"),
        ("math_specialist", "MESH_RUNS_DIR", "run ledger directory", "runs"),
        ("math_specialist", "MESH_SESSIONS_DIR", "sessions directory", "sessions"),
        ("math_specialist", "MESH_TOOL_LOG_DIR", "tool change log directory", "tool-changes"),
        ("research_specialist", "MESH_MEMO_PATH", "memo's directory", "memo/memo.sqlite3"),
    ],
)
def test_a_data_directory_it_cannot_write_is_a_clear_error(
    tmp_path: Path, agent: str, variable: str, what: str, under: str
) -> None:
    """Under a regular file, a directory cannot be made even by root (the tests' user)."""
    (tmp_path / "file").write_text("")
    place = tmp_path / "file" / under
    directory = place.parent if variable == "MESH_MEMO_PATH" else place
    config = Path(__file__).parent.parent / "mesh.toml"
    done = mesh("serve", agent, "--config", str(config), "--address", "127.0.0.1:0",
                tmp_path=tmp_path, **{variable: str(place)})  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error (config_error): cannot write the {what} {directory} (Not a directory); "
        f"point {variable} somewhere writable"
    )
    assert "Traceback" not in done.stderr


def test_real_model_path_records_a_cassette_that_replays(tmp_path: Path) -> None:
    task = "What is 7!?"
    cassette = Cassette.from_responses(
        [calls(("factorial", {"n": 7})), calls(("final_answer", {"answer": "5040"}))], task=task
    )
    recording = tmp_path / "rec.jsonl"
    with ReplayServer(cassette) as server:
        live = mesh(
            "run",
            "--local",
            task,
            "--api-base",
            server.api_base,
            "--api-key",
            "k",
            "--record",
            str(recording),
            tmp_path=tmp_path,
        )
    assert live.returncode == 0, live.stderr
    assert "REPLAY" not in live.stderr
    assert "<- factorial: 5040" in live.stdout
    assert len(server.requests) == 2
    lines = [json.loads(line) for line in recording.read_text().splitlines()]
    assert [line.get("turn") for line in lines] == [None, 0, 1]

    replayed = mesh("run", "--local", "--replay", str(recording), "--quiet", tmp_path=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "5040"


def code_cassette(tmp_path: Path) -> Path:
    path = tmp_path / "code.jsonl"
    entries = [
        {"task": "2+2?", "response": {"content": text}}
        for text in (code("print(2 + 2)"), code("final_answer(4)"))
    ]
    path.write_text("\n".join(json.dumps(e) for e in entries))
    return path


def test_code_agent_runs_in_the_jail_by_default(tmp_path: Path) -> None:
    done = mesh(
        "run",
        "--local",
        "--agent",
        "code",
        "--replay",
        str(code_cassette(tmp_path)),
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "no sandbox" not in done.stderr
    assert "  observation: Execution logs:\n  observation: 4\n" in done.stdout
    assert "final answer: 4" in done.stdout


def test_unknown_executor(tmp_path: Path) -> None:
    done = mesh("run", "--local", "--agent", "code", "--executor", "docker", tmp_path=tmp_path)
    assert done.returncode == 1
    assert "unknown executor 'docker' (available: nsjail, unsafe-local)" in done.stderr


def test_code_agent_with_the_unsafe_executor(tmp_path: Path) -> None:
    path = code_cassette(tmp_path)
    done = mesh(
        "run",
        "--local",
        "--agent",
        "code",
        "--executor",
        "unsafe-local",
        "--replay",
        str(path),
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "no sandbox" in done.stderr
    assert "    print(2 + 2)" in done.stdout and "observation: Execution logs:" in done.stdout
    assert "final answer: 4" in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "bad.jsonl:1: not a cassette entry"), ("", "holds 0 tasks")],
)
def test_bad_cassette_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    done = mesh("run", "--local", "--replay", str(tmp_path / "bad.jsonl"), tmp_path=tmp_path)
    assert done.returncode == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_certs_writes_what_an_auth_table_needs_and_prints_the_table(tmp_path: Path) -> None:
    done = mesh("certs", str(tmp_path / "creds"), "--caller", "mesh", "--caller", "ops",
                "--host", "10.0.0.7", "--host", "math.mesh.svc", tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    creds = tmp_path / "creds"
    for secret in ("mesh.key", "tokens", "mesh.token", "ops.token"):
        assert (creds / secret).stat().st_mode & 0o077 == 0  # the owner's only
    assert not list(creds.glob("ca*.key"))  # the CA signs nothing more
    agent = '[agents.a]\nkind = "code"\ndescription = "x"\naddress = "127.0.0.1:1"\n'
    (tmp_path / "mesh.toml").write_text(done.stdout + agent)  # what it printed, as it is
    security = load_config(tmp_path / "mesh.toml", frozenset(BUILTIN_TOOLS)).security
    assert security is not None and security.tls and security.require_client_cert
    assert set(security.tokens) == {"mesh", "ops"}
    assert security.client_token == (creds / "mesh.token").read_text().strip()
    assert security.may_call("ops", "Run") and not security.may_call("ops", "AddTool")
    names = x509.load_pem_x509_certificate((creds / "mesh.pem").read_bytes()).extensions
    sans = names.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert sans.get_values_for_type(x509.DNSName) == ["math.mesh.svc"]
