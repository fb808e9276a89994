"""A2A (the Agent2Agent protocol): mesh agents calling, and called by, agents of any framework.

``A2AAgent`` is loaded on first use: the A2A SDK takes half a second to import, which no
process that does not speak A2A should pay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.rpc.a2a.remote import A2AAgent

__all__ = ["A2AAgent"]


def __getattr__(name: str) -> Any:
    if name == "A2AAgent":
        from mesh.rpc.a2a.remote import A2AAgent

        return A2AAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
