"""LiteLLMModel through the real LiteLLM and OpenAI SDK against a local server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mesh import Cassette, ChatMessage, LiteLLMModel, ModelResponse, ReplayServer, TokenUsage
from mesh.errors import ModelCallError
from mesh.models import RetryPolicy, ToolCall
from mesh.tools import factorial

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay_s=0.01)


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    cassette = Cassette.from_responses(
        [
            ModelResponse(
                ChatMessage(
                    "assistant", "let me compute", (ToolCall("call_a", "factorial", '{"n": 5}'),)
                ),
                TokenUsage(42, 7),
                "gpt-4o-mini-2024-07-18",
            ),
            ModelResponse(ChatMessage("assistant", "120"), TokenUsage(50, 2)),
        ]
    )
    with ReplayServer(cassette) as srv:
        yield srv


def model_for(server: ReplayServer, **kwargs: object) -> LiteLLMModel:
    return LiteLLMModel(
        "openai/gpt-4o-mini",
        api_base=server.api_base,
        api_key="test-key",
        retry=FAST_RETRY,
        **kwargs,
    )  # type: ignore[arg-type]


def test_text_and_tool_calls_round_trip(server: ReplayServer) -> None:
    model = model_for(server)
    messages = [ChatMessage("system", "s"), ChatMessage("user", "5!?")]
    first = model.generate(messages, tools=[factorial])
    assert first.message.content == "let me compute"
    assert first.message.tool_calls == (ToolCall("call_a", "factorial", '{"n": 5}'),)
    assert first.usage == TokenUsage(42, 7)
    assert first.model_id == "gpt-4o-mini-2024-07-18"
    assert first.finish_reason == "tool_calls"

    messages += [first.message, ChatMessage("tool", "120", tool_call_id="call_a")]
    second = model.generate(messages, tools=[factorial])
    assert second.message.content == "120" and second.finish_reason == "stop"

    sent = server.requests[-1]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["tools"][0]["function"]["name"] == "factorial"
    assert sent["tool_choice"] == "required"
    assert sent["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"n": 5}'
    assert sent["messages"][3] == {"role": "tool", "content": "120", "tool_call_id": "call_a"}


def test_retries_rate_limits_and_server_errors(server: ReplayServer) -> None:
    server.inject_faults(429, 500)
    response = model_for(server).generate([ChatMessage("user", "x")])
    assert response.message.content == "let me compute"
    assert len(server.requests) == 3


def test_gives_up_after_the_retry_budget(server: ReplayServer) -> None:
    server.inject_faults(503, 503, 503, 503)
    with pytest.raises(ModelCallError, match="after 3 attempt") as err:
        model_for(server).generate([ChatMessage("user", "x")])
    assert err.value.retryable
    assert len(server.requests) == 3


def test_does_not_retry_bad_requests(server: ReplayServer) -> None:
    server.inject_faults(400)
    with pytest.raises(ModelCallError, match="BadRequestError") as err:
        model_for(server).generate([ChatMessage("user", "x")])
    assert not err.value.retryable
    assert len(server.requests) == 1


def test_malformed_response_is_a_clear_error(server: ReplayServer) -> None:
    server.inject_faults(*["garbage"] * 3)
    with pytest.raises(ModelCallError, match="gpt-4o-mini"):
        model_for(server).generate([ChatMessage("user", "x")])


def test_a_model_that_times_out_is_retried_then_given_up_on(server: ReplayServer) -> None:
    model = model_for(server, timeout_s=0.5)
    server.inject_faults("hang")  # answers nothing: our own timeout ends the attempt
    started = time.monotonic()
    assert model.generate([ChatMessage("user", "x")]).message.content == "let me compute"
    assert 0.5 <= time.monotonic() - started < 3 and len(server.requests) == 2

    server.inject_faults("hang", "hang", "hang")
    started = time.monotonic()
    with pytest.raises(ModelCallError, match="Timeout after 3 attempt") as err:
        model.generate([ChatMessage("user", "x")])
    assert err.value.retryable
    assert time.monotonic() - started < 5  # three timeouts and two short backoffs, no more


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    model = LiteLLMModel(
        "openai/gpt-4o-mini",
        api_base=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        retry=RetryPolicy(max_retries=1, initial_delay_s=0.01),
    )
    with pytest.raises(ModelCallError, match="after 2 attempt"):
        model.generate([ChatMessage("user", "x")])
