"""What a model call cost, from LiteLLM's bundled price map.

The map is read as a JSON file, without importing LiteLLM (two seconds and
150 MB that a service on replay models should not pay), and only when a cost
is first needed. A model the map does not know has an unknown cost (None),
never an error.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from mesh.models.base import TokenUsage

__all__ = ["cost_usd"]

PRICE_FILE = "model_prices_and_context_window_backup.json"


@cache
def _prices() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE
    try:
        prices: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prices


def cost_usd(model_id: str, usage: TokenUsage) -> float | None:
    """USD for ``usage`` on ``model_id`` (e.g. "openai/gpt-4o-mini"); None if unknown."""
    prices = _prices()
    for name in (model_id, model_id.split("/", 1)[-1]):
        entry = prices.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return float(
                usage.input_tokens * entry["input_cost_per_token"]
                + usage.output_tokens * entry.get("output_cost_per_token", 0.0)
            )
    return None
