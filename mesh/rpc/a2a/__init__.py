"""A2A (the Agent2Agent protocol): mesh agents calling, and called by, agents of any framework."""

from mesh.rpc.a2a.remote import A2AAgent

__all__ = ["A2AAgent"]
