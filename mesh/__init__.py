"""smolmesh: small focused agents that write code, call tools and delegate.

The public API, with the names a smolagents user already knows.
"""

from typing import TYPE_CHECKING, Any

from mesh.agents import (
    ActionStep,
    AgentEvent,
    AgentMemory,
    CodeAgent,
    FinalAnswerStep,
    ManagedAgent,
    MultiStepAgent,
    PlanningStep,
    RunResult,
    ToolCallingAgent,
    Turn,
)
from mesh.agents.user_input import UserInputTool
from mesh.errors import ErrorInfo, MeshError
from mesh.files import File
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.mcp import MCPServerParameters, mcp_tools
from mesh.models import (
    Cassette,
    ChatMessage,
    Image,
    LiteLLMModel,
    Model,
    ModelResponse,
    RecordingModel,
    ReplayModel,
    ReplayServer,
    TokenUsage,
    ToolCall,
)
from mesh.project import ResolvedAgent
from mesh.rpc.a2a.options import A2AOptions
from mesh.rpc.client import AgentClient
from mesh.rpc.remote import RemoteAgent
from mesh.rpc.serving import serve
from mesh.sandbox import NsjailExecutor, SandboxConfig, UnsafeLocalExecutor
from mesh.tools import (
    DuckDuckGoTool,
    FinalAnswerTool,
    MemoTool,
    PrimeTool,
    Tool,
    celsius_to_fahrenheit,
    factorial,
    tool,
)
from mesh.version import __version__

if TYPE_CHECKING:
    from mesh.rpc.a2a.remote import A2AAgent

__all__ = [
    "A2AAgent",
    "A2AOptions",
    "ActionStep",
    "AgentClient",
    "AgentEvent",
    "AgentMemory",
    "Cassette",
    "ChatMessage",
    "CodeAgent",
    "DuckDuckGoTool",
    "ErrorInfo",
    "File",
    "FinalAnswerStep",
    "FinalAnswerTool",
    "Image",
    "LiteLLMModel",
    "MCPServerParameters",
    "ManagedAgent",
    "MemoTool",
    "MeshError",
    "Model",
    "ModelResponse",
    "MultiStepAgent",
    "NsjailExecutor",
    "PlanningStep",
    "PrimeTool",
    "RecordingModel",
    "RemoteAgent",
    "ReplayModel",
    "ReplayServer",
    "ResolvedAgent",
    "RunFilter",
    "RunRecord",
    "RunResult",
    "RunStatus",
    "SandboxConfig",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolCallingAgent",
    "Turn",
    "UnsafeLocalExecutor",
    "UserInputTool",
    "__version__",
    "celsius_to_fahrenheit",
    "factorial",
    "mcp_tools",
    "serve",
    "tool",
]


def __getattr__(name: str) -> Any:
    """``A2AAgent`` on first use (see ``mesh.rpc.a2a``)."""
    if name == "A2AAgent":
        from mesh.rpc.a2a.remote import A2AAgent

        return A2AAgent
    raise AttributeError(f"module 'mesh' has no attribute {name!r}")
