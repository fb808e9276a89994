"""The rate limit and the response cache around a model."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import ChatMessage, CodeAgent, ModelResponse, TokenUsage
from mesh.agents.context import RunContext
from mesh.errors import DeadlineExceededError
from mesh.models import CachingModel, RateLimitedModel
from mesh.run_scope import current_scope
from mesh.telemetry.spans import record_response
from tests.support import code, scripted

ASK = [ChatMessage("user", "hi")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_the_rate_limit_makes_callers_wait_for_a_slot() -> None:
    clock = FakeClock()
    model = RateLimitedModel(scripted("a"), rpm=2, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        model.generate(ASK)
    assert clock.slept == 0
    model.generate(ASK)  # the third call in the same minute waits for the first to age out
    assert clock.slept == pytest.approx(60.0)
    assert model.waited_s == pytest.approx(60.0)


def test_the_rate_limit_never_waits_past_the_deadline() -> None:
    model = RateLimitedModel(scripted("a"), rpm=1)
    model.generate(ASK)
    token = current_scope.set(RunContext(agent="a", deadline=time.monotonic() + 1))
    try:
        with pytest.raises(DeadlineExceededError, match="rate limit \\(1/min\\)"):
            model.generate(ASK)
    finally:
        current_scope.reset(token)


def test_the_cache_answers_repeated_requests() -> None:
    model = CachingModel(scripted("first", "second"), max_entries=1)
    assert model.generate(ASK).message.content == "first"
    again = model.generate(ASK)
    assert again.cached and again.message.content == "first"
    model.generate([*ASK, ChatMessage("assistant", "x")])  # another request: evicts the first
    assert not model.generate(ASK).cached
    assert (model.hits, model.misses) == (1, 3)


def test_a_repeated_run_is_served_from_the_cache() -> None:
    model = CachingModel(scripted(code("print(1)"), code("final_answer(2)")))
    agent = CodeAgent([], model, executor="unsafe-local")
    assert agent.run("t") == 2 and agent.run("t") == 2
    assert (model.hits, model.misses) == (2, 2)


def test_chat_spans_carry_redacted_prompt_and_output(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    response = ModelResponse(ChatMessage("assistant", "done"), TokenUsage(1, 1), "m")
    prompt = [ChatMessage("user", "use sk-abcdefghijklmnopqrstuvwxyz123456 please")]
    for mode in ("truncated", "off"):
        monkeypatch.setenv("MESH_LOG_CONTENT", mode)
        span = provider.get_tracer("test").start_span(mode)
        record_response(span, response, prompt)
        span.end()
    truncated, off = exporter.get_finished_spans()
    assert "use [REDACTED] please" in str(truncated.attributes["gen_ai.input.messages"])
    assert truncated.attributes["gen_ai.output.text"] == "done"
    assert off.attributes is not None and "gen_ai.input.messages" not in off.attributes
