"""Budgets: a ceiling on what a run, and every run beneath it, may spend.

A run's budget is the tighter of its agent's own budget and what its caller
has left, so a delegated run (local or remote) inherits the remainder. It is
checked before and after every model call against the run's spending so far,
its delegates included, and a run that runs out stops with a
``BudgetExceededError`` that names the budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from mesh.agents.usage import AgentUsage
from mesh.errors import BudgetExceededError, ConfigError

__all__ = ["BUDGET_FIELDS", "Budget"]

BUDGET_FIELDS = frozenset({"max_tokens", "max_cost_usd", "max_model_calls"})


@dataclass(frozen=True)
class Budget:
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_model_calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_cost_usd", "max_model_calls"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"budget {name} must be >= 0 (got {value})")

    def tighter(self, other: Budget | None) -> Budget:
        if other is None:
            return self
        return Budget(
            _least(self.max_tokens, other.max_tokens),
            _least(self.max_cost_usd, other.max_cost_usd),
            _least(self.max_model_calls, other.max_model_calls),
        )

    def share(self, parts: int) -> Budget:
        """One of ``parts`` equal shares: what each of that many calls at once may spend."""
        if parts <= 1:
            return self
        return Budget(
            None if self.max_tokens is None else self.max_tokens // parts,
            None if self.max_cost_usd is None else self.max_cost_usd / parts,
            None if self.max_model_calls is None else self.max_model_calls // parts,
        )  # fmt: skip

    def remaining(self, spent: AgentUsage) -> Budget:
        """What is left after ``spent`` (an unknown cost leaves the cost budget as it is)."""
        return Budget(
            None if self.max_tokens is None
            else max(0, self.max_tokens - spent.tokens.total_tokens),
            self.max_cost_usd if self.max_cost_usd is None or spent.cost_usd is None
            else max(0.0, self.max_cost_usd - spent.cost_usd),
            None if self.max_model_calls is None
            else max(0, self.max_model_calls - spent.model_calls),
        )  # fmt: skip

    def check(self, spent: AgentUsage, *, next_call: bool, who: str) -> None:
        """Raise if ``spent`` is over the budget, or (``next_call``) no call is left."""
        tokens = spent.tokens.total_tokens
        if self.max_model_calls is not None and (
            spent.model_calls >= self.max_model_calls if next_call
            else spent.model_calls > self.max_model_calls
        ):  # fmt: skip
            raise BudgetExceededError(
                f"{who} is out of budget: max_model_calls={self.max_model_calls}, "
                f"{spent.model_calls} made"
            )
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise BudgetExceededError(
                f"{who} is out of budget: max_tokens={self.max_tokens}, {tokens} used"
            )
        if (
            self.max_cost_usd is not None
            and spent.cost_usd is not None
            and (spent.cost_usd > self.max_cost_usd)
        ):
            raise BudgetExceededError(
                f"{who} is out of budget: max_cost_usd={self.max_cost_usd:g}, "
                f"${spent.cost_usd:.6f} spent"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str) -> Budget:
        unknown = set(data) - BUDGET_FIELDS
        if unknown:
            raise ConfigError(f"{where}: unknown budget field(s) {sorted(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except (TypeError, ConfigError) as err:
            raise ConfigError(f"{where}: {err}") from err


N = TypeVar("N", int, float)


def _least(a: N | None, b: N | None) -> N | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None
