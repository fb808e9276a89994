"""``LiteLLMModel``: any provider LiteLLM reaches (OpenAI, Ollama, vLLM, ...).

LiteLLM is imported on the first call, never at import time: it costs about
two seconds and 150 MB, which services driven by a replay model should not
pay, and it is told to use its bundled cost map so that importing it never
touches the network. Retries with exponential backoff cover rate limits and
transient failures; every other failure becomes a ``ModelCallError`` with
the provider's message. A run's cancellation or deadline aborts the request
in flight (see ``abortable``).

With ``on_delta`` the answer streams: each piece of its text goes to
``on_delta`` as it arrives, and the pieces are then built into the whole
response, with the usage the provider reports at the end of the stream
(``stream_options.include_usage``), so that tokens and cost stay exact.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mesh.errors import DeadlineExceededError, MeshError, ModelCallError, ModelOutputError
from mesh.models.abortable import pause, run_abortable
from mesh.models.base import ChatMessage, DeltaSink, ModelResponse, TokenUsage, ToolCall
from mesh.models.openai_format import to_openai_message
from mesh.run_scope import current_scope
from mesh.text import clip

if TYPE_CHECKING:
    from mesh.tools.base import Tool

__all__ = [
    "DEFAULT_MODEL_ID",
    "LiteLLMModel",
    "RetryPolicy",
    "has_provider_key",
    "provider_key_name",
]

DEFAULT_MODEL_ID = "openai/gpt-4o-mini"

_RETRYABLE = (
    "RateLimitError",
    "APIConnectionError",
    "Timeout",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
)
_import_lock = threading.Lock()


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    initial_delay_s: float = 1.0
    multiplier: float = 2.0
    max_delay_s: float = 20.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.initial_delay_s * self.multiplier**attempt))


def _litellm() -> ModuleType:
    with _import_lock:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        return litellm


class LiteLLMModel:
    """A ``Model`` backed by ``litellm.completion``."""

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL_ID,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        **completion_kwargs: Any,
    ) -> None:
        self.model_id = model_id
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.completion_kwargs = completion_kwargs

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
        on_delta: DeltaSink | None = None,
    ) -> ModelResponse:
        self._check_credentials()
        request = self._request(messages, tools, stop)
        if response_format is not None:
            request["response_format"] = dict(response_format)
        litellm = _litellm()
        streamed = _Streamed(litellm, on_delta) if on_delta is not None else None
        retryable = tuple(getattr(litellm.exceptions, name) for name in _RETRYABLE)
        attempt = 0
        while True:
            remaining = _run_time_left()  # a call never outlives the run that made it
            request["timeout"] = self.timeout_s if remaining is None else min(
                self.timeout_s, remaining)  # fmt: skip
            try:
                call = streamed(request) if streamed else litellm.acompletion(**request)
                raw = run_abortable(call)
            except retryable as err:
                if streamed and streamed.pieces:
                    raise ModelCallError(
                        f"{self.model_id}: {type(err).__name__} after {streamed.pieces} piece(s) "
                        f"of the answer had streamed: {clip(str(err), 300, one_line=True)}",
                        retryable=True,
                    ) from err  # not tried again: the stream's readers have half an answer
                delay = self.retry.delay(attempt)
                remaining = _run_time_left()
                if remaining is not None and remaining <= delay:
                    raise DeadlineExceededError(
                        f"{self.model_id}: {type(err).__name__}, and the run's deadline leaves "
                        "no time to try again"
                    ) from err
                if attempt >= self.retry.max_retries:
                    raise ModelCallError(
                        f"{self.model_id}: {type(err).__name__} after {attempt + 1} attempt(s): "
                        f"{clip(str(err), 500, one_line=True)}",
                        retryable=True,
                    ) from err
                pause(delay)
                attempt += 1
            except MeshError:
                raise  # the run was cancelled or ran out of time: not the provider's failure
            except Exception as err:
                raise ModelCallError(
                    f"{self.model_id}: {type(err).__name__}: {clip(str(err), 500, one_line=True)}",
                    retryable=False,
                ) from err
            else:
                return self._response(raw)

    def _check_credentials(self) -> None:
        """A missing key fails at once, naming the variable to set: it is not a transient
        error, and retrying it only hides the cause behind a wait."""
        if self.api_key or self.api_base or _provider(self.model_id) not in KEYED_PROVIDERS:
            return
        if not has_provider_key(self.model_id):
            raise ModelCallError(
                f"{self.model_id}: no API key: set {provider_key_name(self.model_id)} (or give "
                "api_key, or api_base for a local OpenAI-compatible server)",
                retryable=False,
            )

    def _request(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None,
        stop: Sequence[str] | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": [to_openai_message(m) for m in messages],
            "timeout": self.timeout_s,
            "num_retries": 0,  # retries are ours, so that they are counted and bounded
            **self.completion_kwargs,
        }
        if self.api_base:
            request["api_base"] = self.api_base
        if self.api_key:
            request["api_key"] = self.api_key
        elif self.api_base and not has_provider_key(self.model_id):
            request["api_key"] = "unused"  # local OpenAI-compatible servers need none
        if tools:
            request["tools"] = [tool.to_json_schema() for tool in tools]
            request.setdefault("tool_choice", "required")
        if stop:
            request["stop"] = list(stop)
        return request

    def _response(self, raw: Any) -> ModelResponse:
        try:
            choice = raw.choices[0]
            message = choice.message
            calls = tuple(
                ToolCall(
                    id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments
                )
                for i, c in enumerate(message.tool_calls or ())
            )
            usage = getattr(raw, "usage", None)
            return ModelResponse(
                message=ChatMessage(
                    role="assistant", content=message.content or None, tool_calls=calls
                ),
                usage=TokenUsage(
                    input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                    output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                ),
                model_id=str(getattr(raw, "model", "") or self.model_id),
                finish_reason=choice.finish_reason,
            )
        except (AttributeError, IndexError, TypeError) as err:
            raise ModelOutputError(f"{self.model_id}: unexpected response shape: {err}") from err


class _Streamed:
    """One streamed model call: its text's pieces to ``on_delta`` as they come, then the
    whole response, built from the pieces as a non-streamed call returns it."""

    def __init__(self, litellm: ModuleType, on_delta: DeltaSink) -> None:
        self.litellm = litellm
        self.on_delta = on_delta
        self.pieces = 0

    async def __call__(self, request: dict[str, Any]) -> Any:
        stream = await self.litellm.acompletion(
            **request, stream=True, stream_options={"include_usage": True}
        )
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                self.pieces += 1
                self.on_delta(text)
        return self.litellm.stream_chunk_builder(chunks, messages=request["messages"])


def _run_time_left() -> float | None:
    """Seconds left to the current run's deadline (None outside a run, or with no deadline)."""
    run = current_scope.get()
    if run is None:
        return None
    run.raise_if_cancelled()
    return run.remaining()


KEYED_PROVIDERS = frozenset({
    "openai", "anthropic", "gemini", "mistral", "groq", "cohere", "deepseek", "together_ai",
    "fireworks_ai", "openrouter", "xai", "perplexity",
})  # fmt: skip
"""Hosted providers that refuse every call without a key (local servers need none)."""


def provider_key_name(model_id: str) -> str:
    """The environment variable LiteLLM reads the key from, e.g. OPENAI_API_KEY."""
    return f"{_provider(model_id).upper()}_API_KEY"


def _provider(model_id: str) -> str:
    return model_id.split("/", 1)[0] if "/" in model_id else "openai"


def has_provider_key(model_id: str) -> bool:
    return bool(os.environ.get(provider_key_name(model_id)))
