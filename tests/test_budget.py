"""Budgets: a run that would spend more than it may stops, naming the budget."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from mesh import TokenUsage
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.budget import Budget
from mesh.agents.usage import AgentUsage
from mesh.errors import BudgetExceededError, ConfigError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import SEED_TASK
from tests.test_seed_scenario import TASK, manager, math_specialist, research_specialist


def spent(tokens: int, calls: int, cost: float | None = 0.0) -> AgentUsage:
    return AgentUsage(TokenUsage(tokens, 0), cost, calls)


def test_budget_arithmetic() -> None:
    budget = Budget(max_tokens=1000, max_cost_usd=1.0, max_model_calls=5)
    assert budget.tighter(Budget(max_tokens=400)) == Budget(400, 1.0, 5)
    assert budget.remaining(spent(300, 2, 0.25)) == Budget(700, 0.75, 3)
    assert budget.remaining(spent(300, 2, None)).max_cost_usd == 1.0  # unknown cost: unchanged
    budget.check(spent(1000, 4), next_call=True, who="a")
    with pytest.raises(BudgetExceededError, match="a is out of budget: max_model_calls=5, 5 made"):
        budget.check(spent(10, 5), next_call=True, who="a")
    with pytest.raises(BudgetExceededError, match="max_tokens=1000, 1001 used"):
        budget.check(spent(1001, 1), next_call=False, who="a")
    with pytest.raises(BudgetExceededError, match="max_cost_usd=1"):
        budget.check(spent(1, 1, 1.5), next_call=False, who="a")
    with pytest.raises(ConfigError, match="must be >= 0"):
        Budget(max_tokens=-1)


def test_a_manager_out_of_model_calls_stops(tmp_path: Path) -> None:
    boss = manager(research_specialist(tmp_path / "memo.db"), math_specialist())
    boss.budget = Budget(max_model_calls=2)
    with pytest.raises(BudgetExceededError, match="manager is out of budget: max_model_calls=2"):
        boss.run(TASK)


def test_a_specialist_runs_out_of_the_remainder_it_inherited(tmp_path: Path) -> None:
    # Every scripted model call uses 110 tokens.
    boss = manager(research_specialist(tmp_path / "memo.db"), math_specialist())
    boss.budget = Budget(max_tokens=300)
    with pytest.raises(BudgetExceededError, match="manager is out of budget: max_tokens=300, 330"):
        boss.run(TASK)
    first = boss.memory.steps[0].error or ""  # type: ignore[union-attr]
    assert "research_specialist could not finish the task (budget_exceeded)" in first
    assert "research_specialist is out of budget: max_tokens=190, 220 used" in first


def test_budgets_cross_the_mesh(mesh_dir: Path, tmp_path: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    only = ("manager", "research_specialist", "math_specialist")
    with MeshProcesses(config, only=only, log_dir=tmp_path / "logs") as mesh:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(mesh.addresses["manager"][0]))  # type: ignore[no-untyped-call]
        request = pb.RunStreamRequest(task=SEED_TASK, budget=pb.Budget(max_tokens=3000))
        events = []
        with pytest.raises(grpc.RpcError) as err:
            for response in stub.RunStream(request, timeout=60):
                events.extend(response.events)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Manager: 1554 tokens, then the research specialist (limit 1446 left) spent 2076.
    assert "manager is out of budget: max_tokens=3000, 3630 used" in err.value.details()
    failed = [e.step_failed.error.message for e in events if e.WhichOneof("kind") == "step_failed"]
    assert any("research_specialist is out of budget: max_tokens=1446, 2076 used" in f
               for f in failed)  # fmt: skip
