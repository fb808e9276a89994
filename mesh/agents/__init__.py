"""Agents: the shared multi-step loop and its two kinds."""

from mesh.agents.base import MultiStepAgent, RunResult
from mesh.agents.callbacks import FinalAnswerStep
from mesh.agents.code_agent import CodeAgent
from mesh.agents.context import RunContext
from mesh.agents.conversation import Turn
from mesh.agents.events import (
    AgentEvent,
    CodeAction,
    FinalAnswer,
    ModelOutput,
    ModelOutputDelta,
    Observation,
    Planning,
    RunFinished,
    RunStarted,
    StepFailed,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.agents.managed import ManagedAgent, ManagedAgentTool
from mesh.agents.memory import ActionStep, AgentMemory, ToolCallRecord
from mesh.agents.planning import PlanningStep
from mesh.agents.tool_calling_agent import ToolCallingAgent

__all__ = [
    "ActionStep",
    "AgentEvent",
    "AgentMemory",
    "CodeAction",
    "CodeAgent",
    "FinalAnswer",
    "FinalAnswerStep",
    "ManagedAgent",
    "ManagedAgentTool",
    "ModelOutput",
    "ModelOutputDelta",
    "MultiStepAgent",
    "Observation",
    "Planning",
    "PlanningStep",
    "RunContext",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "StepFailed",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolCallingAgent",
    "Turn",
]
