"""Model wrappers: a per-agent rate limit, and an opt-in response cache.

Both wrap any ``Model``. The rate limit allows ``rpm`` calls per sliding
minute and makes a caller wait for a slot (never past its run's deadline or
cancellation); the cache answers a request it has seen before, keyed by the
whole request (model, messages, tool schemas, stop sequences, response format), and counts
hits and misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError, DeadlineExceededError
from mesh.models.base import ChatMessage, Model, ModelResponse
from mesh.run_scope import current_scope

if TYPE_CHECKING:
    from mesh.tools.base import Tool

__all__ = ["CachingModel", "RateLimitedModel"]


class RateLimitedModel:
    def __init__(
        self,
        model: Model,
        rpm: int,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rpm < 1:
            raise ConfigError(f"rate limit must allow at least 1 call per minute (got {rpm})")
        self.model = model
        self.model_id = model.model_id
        self.rpm = rpm
        self.window_s = window_s
        self._clock, self._sleep = clock, sleep
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited_s = 0.0
        """Total time callers spent waiting for a slot."""

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        **options: Any,
    ) -> ModelResponse:
        self._acquire()
        return self.model.generate(messages, tools=tools, stop=stop, **options)

    def _acquire(self) -> None:
        run = current_scope.get()
        while True:
            with self._lock:
                now = self._clock()
                while self._calls and self._calls[0] <= now - self.window_s:
                    self._calls.popleft()
                if len(self._calls) < self.rpm:
                    self._calls.append(now)
                    return
                wait = self._calls[0] + self.window_s - now
            if run is not None:
                run.raise_if_cancelled()
                remaining = run.remaining()
                if remaining is not None and remaining < wait:
                    raise DeadlineExceededError(
                        f"the model rate limit ({self.rpm}/min) would make this call wait "
                        f"{wait:.1f} s, past the run's deadline"
                    )
            pause = min(wait, 0.25)  # wake up often enough to notice cancellation
            self.waited_s += pause
            self._sleep(pause)


class CachingModel:
    def __init__(self, model: Model, max_entries: int = 1000) -> None:
        self.model = model
        self.model_id = model.model_id
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, ModelResponse] = OrderedDict()
        self._lock = threading.Lock()

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        **options: Any,
    ) -> ModelResponse:
        key = request_key(self.model_id, messages, tools, stop, options.get("response_format"))
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if cached is not None:
            if options.get("on_delta") and cached.message.content:  # a stream sees it too
                options["on_delta"](cached.message.content)
            return dataclasses.replace(cached, cached=True)
        with self._lock:
            self.misses += 1
        response = self.model.generate(messages, tools=tools, stop=stop, **options)
        with self._lock:
            self._entries[key] = response
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return response


def request_key(
    model_id: str,
    messages: Sequence[ChatMessage],
    tools: Sequence[Tool] | None,
    stop: Sequence[str] | None,
    response_format: Mapping[str, Any] | None = None,
) -> str:
    request = {
        "model": model_id,
        "messages": [m.to_dict() for m in messages],
        "tools": [t.to_json_schema() for t in tools or ()],
        "stop": list(stop or ()),
        "response_format": response_format,
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
