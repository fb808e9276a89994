"""The tools a config may name without an import path: smolmesh's own library tools."""

from __future__ import annotations

from collections.abc import Callable

from mesh.tools import (
    DuckDuckGoTool,
    MemoTool,
    PrimeTool,
    Tool,
    celsius_to_fahrenheit,
    factorial,
)

__all__ = ["BUILTIN_TOOLS"]

BUILTIN_TOOLS: dict[str, Callable[[], Tool]] = {
    "celsius_to_fahrenheit": lambda: celsius_to_fahrenheit,
    "factorial": lambda: factorial,
    "smallest_prime_factor": PrimeTool,
    "memo": MemoTool,
    "web_search": DuckDuckGoTool,
}
"""Each name makes a fresh tool (an agent's tools are its own)."""
