"""What a call over A2A costs beside the same call over our own contract.

Run by hand: ``.venv/bin/python bench/a2a_overhead.py [CALLS]``. One agent (the
conformance agent: a tool-calling mesh agent whose scripted model answers at once, one
model call and one tool call per run) is served in its own process, over both contracts
on one port. A client then makes CALLS calls (default 200, after 20 to warm up) of each
kind, alternating so that the machine's drift falls on both alike:

- native ``Run`` (smolmesh.v1, unary), the same in a new session (as every A2A message
  without a context is: its task's context is a conversation) and native ``RunStream``;
- A2A ``SendMessage`` (blocking) and ``SendStreamingMessage``, with the raw generated stub;
- A2A ``SendMessage`` through the official SDK's client (its own channel and call path).

It prints each kind's median, p90 and p99 in milliseconds, and the medians' ratio to
native ``Run``. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import grpc
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from tests.support import free_port, serving
from tests.test_a2a_serve import SERVE

VERSION = (("a2a-version", "1.0"),)
WARM_UP = 20


def a2a_message() -> a2a.SendMessageRequest:
    message = a2a.Message(
        message_id=f"tck-complete-task-{uuid.uuid4().hex[:8]}",
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text="hello")],
    )
    return a2a.SendMessageRequest(message=message)


def kinds(address: str, card_url: str) -> dict[str, Callable[[], None]]:
    channel = grpc.insecure_channel(address)
    native = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
    facade = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
    loop = asyncio.new_event_loop()
    config = ClientConfig(
        streaming=False,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=grpc.aio.insecure_channel,
    )
    client = loop.run_until_complete(create_client(card_url, client_config=config))

    async def through_sdk() -> None:
        async for _ in client.send_message(a2a_message()):
            pass

    return {
        "native Run": lambda: native.Run(pb.RunRequest(task="hello"), timeout=30),
        "native Run, new session": lambda: native.Run(
            pb.RunRequest(task="hello", session_id=uuid.uuid4().hex), timeout=30
        ),
        "native RunStream": lambda: list(
            native.RunStream(pb.RunStreamRequest(task="hello"), timeout=30)
        ),
        "A2A SendMessage": lambda: facade.SendMessage(a2a_message(), metadata=VERSION, timeout=30),
        "A2A SendStreamingMessage": lambda: list(
            facade.SendStreamingMessage(a2a_message(), metadata=VERSION, timeout=30)
        ),
        "A2A SendMessage (SDK client)": lambda: loop.run_until_complete(through_sdk()),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as temp:
        card = f"127.0.0.1:{free_port()}"
        with serving(SERVE, Path(temp), card) as (address, _):
            calls_of = kinds(address, f"http://{card}")
            times: dict[str, list[float]] = {name: [] for name in calls_of}
            for round_ in range(WARM_UP + calls):
                for name, call in calls_of.items():
                    started = time.perf_counter()
                    call()
                    if round_ >= WARM_UP:
                        times[name].append((time.perf_counter() - started) * 1000)
    base = statistics.median(times["native Run"])
    print(f"{calls} calls of each kind (after {WARM_UP} to warm up), one agent, one process:")
    print(f"{'call':30} {'median':>8} {'p90':>8} {'p99':>8} {'vs Run':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:30} {median:6.2f}ms {percentile(values, 0.9):6.2f}ms "
            f"{percentile(values, 0.99):6.2f}ms {median / base:6.2f}x"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
