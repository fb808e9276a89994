"""Token usage and cost, per agent, rolled up through the delegation tree."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from mesh import TokenUsage
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.usage import AgentUsage, merge_usage
from mesh.launcher import MeshProcesses
from mesh.models.cost import cost_usd
from mesh.project import load_mesh_config
from tests.mesh_setup import SEED_TASK
from tests.test_seed_scenario import TASK, manager, math_specialist, research_specialist

GPT_4O_MINI = (1.5e-07, 6e-07)  # USD per input / output token in LiteLLM's bundled map


def test_cost_from_the_bundled_price_map() -> None:
    usage = TokenUsage(1000, 100)
    expected = 1000 * GPT_4O_MINI[0] + 100 * GPT_4O_MINI[1]
    assert cost_usd("gpt-4o-mini", usage) == pytest.approx(expected)
    assert cost_usd("openai/gpt-4o-mini", usage) == pytest.approx(expected)
    assert cost_usd("replay", usage) is None
    assert cost_usd("my-private-model", usage) is None


def test_unknown_cost_stays_unknown_when_merged() -> None:
    known = AgentUsage(TokenUsage(1, 1), 0.5, 1)
    unknown = AgentUsage(TokenUsage(2, 2), None, 1)
    merged = merge_usage([{"a": known}, {"a": unknown, "b": known}])
    assert merged["a"] == AgentUsage(TokenUsage(3, 3), None, 2)
    assert merged["b"] == known


def test_a_local_run_reports_the_usage_of_its_delegates(tmp_path: Path) -> None:
    boss = manager(research_specialist(tmp_path / "memo.db"), math_specialist())
    result = boss.run(TASK, return_full_result=True)
    assert set(result.usage_by_agent) == {"manager", "research_specialist", "math_specialist"}
    assert result.usage_by_agent["manager"].model_calls == 3
    assert result.usage_by_agent["research_specialist"].tokens == TokenUsage(300, 30)
    assert result.usage_by_agent["manager"].cost_usd is None  # scripted: no known model


def test_the_mesh_rolls_usage_up_across_processes(mesh_dir: Path, tmp_path: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    only = ("manager", "research_specialist", "math_specialist")
    with MeshProcesses(config, only=only, log_dir=tmp_path / "logs") as mesh:
        channel = grpc.insecure_channel(mesh.addresses["manager"][0])
        reply = agent_pb2_grpc.AgentServiceStub(channel).Run(  # type: ignore[no-untyped-call]
            pb.RunRequest(task=SEED_TASK), timeout=60
        )
    by_agent = reply.usage_by_agent
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (4769, 167)  # its own
    assert {name: (u.tokens.input_tokens, u.tokens.output_tokens, u.model_calls)
            for name, u in by_agent.items()} == {
        "manager": (4769, 167, 3),
        "research_specialist": (3170, 88, 3),
        "math_specialist": (2500, 55, 2),
    }  # fmt: skip
    # The cassettes were recorded from gpt-4o-mini, whose price LiteLLM's map knows.
    math = by_agent["math_specialist"]
    assert math.cost_known
    assert math.cost_usd == pytest.approx(2500 * GPT_4O_MINI[0] + 55 * GPT_4O_MINI[1])
