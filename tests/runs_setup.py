"""A service whose runs take a while, shared by the tests of runs and conversations.

LiteLLM against a local OpenAI-compatible server (``ReplayServer``) whose every
answer takes ``STEP_S``, so that a run is still going while a test looks it up,
drops its stream, rejoins and cancels it. The conversation's answers are found
only if the model was shown the earlier turns: a replay is keyed by the
conversation's first task and the assistant messages so far (each turn leaves
two: its code, and its final answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.launcher import MeshProcesses
from mesh.models.base import ChatMessage, ModelResponse, TokenUsage
from mesh.models.replay import Cassette
from mesh.models.replay_server import ReplayServer
from tests.mesh_setup import litellm_math_service
from tests.postgres_server import PostgresServer
from tests.support import code

LONG_TASK = "Count slowly to eight."
LONG_STEPS = 9
"""Eight prints, then the answer: 8."""
SHORT_TASK = "What is 3!?"
FIRST_TURN = "Remember the number 7."
SECOND_TURN = "What is its factorial?"
THIRD_TURN = "And the number I gave you?"
STEP_S = 0.3


def answer(text: str) -> ModelResponse:
    return ModelResponse(ChatMessage("assistant", text), TokenUsage(20, 5))


def runs_cassette() -> Cassette:
    counting = [answer(code(f"print({n})")) for n in range(1, LONG_STEPS)]
    return Cassette([
        *Cassette.from_responses([*counting, answer(code("final_answer(8)"))],
                                 task=LONG_TASK).entries,
        *Cassette.from_responses([answer(code("final_answer(factorial(3))"))],
                                 task=SHORT_TASK).entries,
        *Cassette.from_responses([
            answer(code("final_answer('noted: 7')")),
            answer("unused"),  # the place of turn 1's final answer line
            answer(code("final_answer(factorial(7))")),
            answer("unused"),
            answer(code("final_answer(7)")),
        ], task=FIRST_TURN).entries,
    ])  # fmt: skip


def data_env(directory: Path) -> dict[str, str]:
    """Everything the service keeps, under ``directory``."""
    return {name: str(directory / sub) for name, sub in [
        ("MESH_AUDIT_DIR", "audit"), ("MESH_TRACE_DIR", "traces"), ("MESH_RUNS_DIR", "runs"),
        ("MESH_SESSIONS_DIR", "sessions")]}  # fmt: skip


@pytest.fixture(scope="session")
def runs_model() -> Iterator[ReplayServer]:
    with ReplayServer(runs_cassette(), latency_s=STEP_S) as server:
        yield server


@pytest.fixture(scope="session")
def runs_service(
    runs_model: ReplayServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshProcesses]:
    directory = tmp_path_factory.mktemp("runs-service")
    with litellm_math_service(runs_model.api_base, directory, data_env(directory)) as mesh:
        yield mesh


@pytest.fixture(scope="session")
def shared_runs_service(
    runs_model: ReplayServer, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshProcesses]:
    """The same service as two replicas, sharing their state in PostgreSQL."""
    directory = tmp_path_factory.mktemp("shared-runs-service")
    env = {**data_env(directory), "MESH_STATE_DSN": postgres.create_database("shared_runs")}
    with litellm_math_service(runs_model.api_base, directory, env, replicas=2) as mesh:
        yield mesh
