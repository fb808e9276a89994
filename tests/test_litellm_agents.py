"""Both agent kinds end to end through LiteLLM against a local OpenAI-style server."""

from __future__ import annotations

from mesh import (
    Cassette,
    CodeAgent,
    LiteLLMModel,
    PrimeTool,
    ReplayServer,
    ToolCallingAgent,
    factorial,
)
from tests.support import calls, code


def model(server: ReplayServer) -> LiteLLMModel:
    return LiteLLMModel("openai/gpt-4o-mini", api_base=server.api_base, api_key="test-key")


def test_tool_calling_agent_through_litellm() -> None:
    cassette = Cassette.from_responses(
        [
            calls(("factorial", {"n": 6}), ("smallest_prime_factor", {"n": 721})),
            calls(("final_answer", {"answer": "6! = 720; 721 = 7 x 103"})),
        ],
        task="6! and 721?",
    )
    with ReplayServer(cassette) as server:
        agent = ToolCallingAgent([factorial, PrimeTool()], model(server))
        result = agent.run("6! and 721?", return_full_result=True)
    assert result.output == "6! = 720; 721 = 7 x 103"
    assert result.usage.input_tokens == 200
    first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == [
        "factorial",
        "smallest_prime_factor",
        "final_answer",
    ]
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "720",
        "721 is composite; its smallest prime factor is 7.",
    ]


def test_code_agent_through_litellm() -> None:
    cassette = Cassette.from_responses(
        [
            code("x = factorial(4)\nprint(x)"),
            code("final_answer(x + 1)"),
        ],
        task="4! + 1?",
    )
    with ReplayServer(cassette) as server:
        agent = CodeAgent([factorial], model(server), executor="unsafe-local")
        assert agent.run("4! + 1?") == 25
    first, second = server.requests
    assert "tools" not in first and first["stop"] == ["Observation:"]
    assert second["messages"][-1] == {
        "role": "user",
        "content": "Observation:\nExecution logs:\n24",
    }
