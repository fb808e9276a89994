"""Usage per agent, rolled up through the delegation tree.

A run reports its own model calls, tokens and cost, and those of every run
beneath it, keyed by agent name, whether the runs beneath were in this
process or in another (their figures arrive with their last event).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mesh.models.base import TokenUsage

__all__ = ["AgentUsage", "merge_usage"]


@dataclass(frozen=True)
class AgentUsage:
    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = 0.0
    """None when some model call's price is unknown."""
    model_calls: int = 0

    def __add__(self, other: AgentUsage) -> AgentUsage:
        cost = (
            None
            if self.cost_usd is None or other.cost_usd is None
            else (self.cost_usd + other.cost_usd)
        )
        return AgentUsage(self.tokens + other.tokens, cost, self.model_calls + other.model_calls)


def merge_usage(parts: Iterable[Mapping[str, AgentUsage]]) -> dict[str, AgentUsage]:
    merged: dict[str, AgentUsage] = {}
    for part in parts:
        for agent, usage in part.items():
            merged[agent] = merged.get(agent, AgentUsage()) + usage
    return merged
