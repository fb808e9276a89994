"""The test mesh: the seed agents plus a deliberately slow specialist, on free ports.

``mesh_dir`` (registered in conftest.py) writes its config and cassettes once
per session; tests start processes from it as they need.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.support import code

ROOT = Path(__file__).parent.parent
SEED_CONFIG = ROOT / "mesh.toml"
"""The seed mesh, defined in services/ like any user's project."""
SEED_TASK = load_mesh_config(SEED_CONFIG).task
SLOW_TASK = "Ask the slow specialist to spin."
SPIN_TASK = "Spin until stopped."
DOWN_TASK = "Find the year gRPC was open-sourced."
LOST_TASK = "Ask the slow specialist to spin, then say what happened."
SEED_SERVICES = ROOT / "services"

CONFIG = """
[mesh]
entry = "manager"
replay = "always"
task = "{seed}"

[agents.manager]
kind = "code"
description = "Delegates."
address = "127.0.0.1:0"
managed_agents = ["research_specialist", "math_specialist", "slow_specialist"]
cassette = "manager.jsonl"
[agents.manager.a2a]              # served over A2A too (tests/test_mesh.py)
http_address = "127.0.0.1:0"

[agents.research_specialist]
kind = "tool-calling"
description = "Finds facts with web search and remembers them in a durable memo."
address = "127.0.0.1:0"
tools = ["web_search", "memo"]
agent = "services.research_specialist.agent:build"
cassette = "research_specialist.jsonl"

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic and number theory."
address = "127.0.0.1:0"
tools = ["smallest_prime_factor", "factorial", "celsius_to_fahrenheit"]
cassette = "math_specialist.jsonl"

[agents.slow_specialist]
kind = "code"
description = "Spins until stopped."
address = "127.0.0.1:0"
cassette = "slow.jsonl"
max_concurrent_runs = 1
[agents.slow_specialist.sandbox]
wall_seconds = 120
"""


LITELLM_MATH_CONFIG = """
[mesh]
entry = "math_specialist"
[models]
api_base = "{api_base}"
retry_delay_s = 0.05              # the fault tests retry a few times: quickly
[agents.math_specialist]
kind = "code"
description = "Arithmetic."
address = {addresses}
tools = ["factorial"]
model = "openai/gpt-4o-mini"
"""


@contextmanager
def litellm_math_service(
    api_base: str, directory: Path, env: dict[str, str] | None = None, *, replicas: int = 1
) -> Iterator[MeshProcesses]:
    """A math specialist in its own process (or ``replicas`` of them, each its own), on
    LiteLLM against ``api_base`` (a local OpenAI-compatible server): the real provider
    path, offline."""
    addresses = json.dumps(["127.0.0.1:0"] * replicas)
    (directory / "mesh.toml").write_text(
        LITELLM_MATH_CONFIG.format(api_base=api_base, addresses=addresses)
    )
    config = load_mesh_config(directory / "mesh.toml")
    with MeshProcesses(config, env={"OPENAI_API_KEY": "sk-loopback-only", **(env or {})},
                       log_dir=directory / "logs") as mesh:  # fmt: skip
        yield mesh


def cassette_lines(task: str, *responses: str) -> str:
    return "".join(
        json.dumps({"task": task, "turn": turn, "response": {"content": text}}) + "\n"
        for turn, text in enumerate(responses)
    )


@pytest.fixture(scope="session")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mesh")
    (directory / "mesh.toml").write_text(CONFIG.format(seed=SEED_TASK))
    for name in ("research_specialist", "math_specialist"):
        shutil.copy(SEED_SERVICES / name / "cassette.jsonl", directory / f"{name}.jsonl")
    manager = (SEED_SERVICES / "manager" / "cassette.jsonl").read_text()
    manager += cassette_lines(SLOW_TASK, code('slow_specialist(task="Spin until stopped.")'))
    manager += cassette_lines(
        DOWN_TASK,
        code('year = research_specialist(task="Find the year gRPC was open-sourced.")'),
        code('final_answer("The research specialist is unavailable; I could not look it up.")'),
    )
    manager += cassette_lines(
        LOST_TASK,
        code('slow_specialist(task="Spin until stopped.")'),
        code('final_answer("The slow specialist was lost mid-task.")'),
    )
    (directory / "manager.jsonl").write_text(manager)
    (directory / "slow.jsonl").write_text(cassette_lines(SPIN_TASK, code("while True:\n    pass")))
    return directory


ADMIN_TOKENS = {"admin": "adm-" + "a" * 32, "tester": "tst-" + "b" * 32, "mesh": "msh-" + "c" * 32}
"""Callers of a mesh with tokens: an admin (may change tools), a tester, the mesh itself."""
ADMIN_AUTH = """
[auth]
tokens_file = "tokens"
token_file = "mesh.token"
[auth.permissions]
admin = ["*", "admin"]
tester = ["*"]
"""
"""The ``[auth]`` table of a config whose callers are ``ADMIN_TOKENS`` (``write_tokens``)."""


def write_tokens(directory: Path) -> None:
    """The files ``ADMIN_AUTH`` names, in ``directory`` (beside the config)."""
    (directory / "tokens").write_text("".join(f"{c} {t}\n" for c, t in ADMIN_TOKENS.items()))
    (directory / "mesh.token").write_text(ADMIN_TOKENS["mesh"])


def bearer(caller: str) -> tuple[tuple[str, str]]:
    """gRPC metadata that calls as ``caller`` (one of ``ADMIN_TOKENS``)."""
    return (("authorization", f"Bearer {ADMIN_TOKENS[caller]}"),)
