"""The public API is a promise: changing it must be a decision, not an accident."""

from __future__ import annotations

import mesh


def test_public_exports() -> None:
    assert sorted(mesh.__all__) == sorted(
        [
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
    )
    for name in mesh.__all__:
        assert getattr(mesh, name) is not None


def test_importing_mesh_does_not_import_litellm() -> None:
    """LiteLLM costs ~2 s and 150 MB at import: only a LiteLLM model's first call pays it."""
    import subprocess
    import sys

    probe = "import sys, mesh; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
