"""The agent loop's own overhead, with a model that answers instantly.

Run by hand: ``.venv/bin/python bench/agent_loop.py``. Prints one table row
per measurement (p50 / p99 over the repetitions). Nothing here is asserted;
the figures go into issue notes and guide optimisation.
"""

from __future__ import annotations

import http.client
import json
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from mesh import (
    Cassette,
    ChatMessage,
    CodeAgent,
    LiteLLMModel,
    MemoTool,
    ReplayModel,
    ReplayServer,
    ToolCallingAgent,
    factorial,
)
from mesh.models import ModelResponse, TokenUsage, ToolCall

warnings.simplefilter("ignore", RuntimeWarning)  # the unsafe executor warns once per run:
logging.getLogger("mesh.sandbox.local").setLevel(logging.ERROR)  # silence it for the bench


def measure(
    fn: Callable[[], object], repeat: int, warmup: int = 3, pause_s: float = 0.0
) -> list[float]:
    """Timings of ``fn``; ``pause_s`` (untimed) between calls lets background work settle."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        time.sleep(pause_s)
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def row(name: str, samples: list[float], per: int = 1) -> str:
    ordered = sorted(s / per for s in samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"| {name:<48} | {p50 * 1e6:>10.1f} | {p99 * 1e6:>10.1f} | {len(samples):>6} |"


def tool_calling_run(steps: int) -> Callable[[], object]:
    call = ModelResponse(ChatMessage("assistant", None, (ToolCall("c", "factorial", '{"n": 5}'),)))
    done = ModelResponse(
        ChatMessage("assistant", None, (ToolCall("f", "final_answer", '{"answer": 1}'),))
    )
    agent = ToolCallingAgent(
        [factorial], ReplayModel(Cassette.from_responses([call] * (steps - 1) + [done]))
    )
    return lambda: agent.run("bench")


def code_run(steps: int, executor: str) -> Callable[[], object]:
    step = "Step.\n```python\nx = factorial(5)\nprint(x)\n```"
    final = "Done.\n```python\nfinal_answer(x)\n```"
    model = ReplayModel(Cassette.from_responses([step] * (steps - 1) + [final]))
    agent = CodeAgent([factorial], model, executor=executor)
    return lambda: agent.run("bench")


def main() -> None:
    steps = 10
    rows = [
        row("plain function call math.factorial(5)", measure(lambda: _plain(5), 5000)),
        row("validated tool call factorial(5)", measure(lambda: factorial(5), 5000)),
        row(
            f"ToolCallingAgent step (run of {steps} steps)",
            measure(tool_calling_run(steps), 200),
            per=steps,
        ),
        row(
            f"CodeAgent step, nsjail (run of {steps}, spare ready)",
            measure(code_run(steps, "nsjail"), 100, pause_s=0.1),
            per=steps,
        ),
        row(
            "CodeAgent step, nsjail (runs back to back)",
            measure(code_run(steps, "nsjail"), 100),
            per=steps,
        ),
        row(
            f"CodeAgent step, unsafe-local (run of {steps})",
            measure(code_run(steps, "unsafe-local"), 200),
            per=steps,
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        memo = MemoTool(Path(tmp) / "bench.db")
        counter = iter(range(10**9))
        rows.append(
            row(
                "MemoTool set (SQLite, WAL, synchronous=FULL)",
                measure(lambda: memo("set", f"k{next(counter)}", 1), 300),
            )
        )
        rows.append(row("MemoTool get", measure(lambda: memo("get", "k1"), 1000)))
    rows += model_call_rows()

    print("| measurement                                      |   p50 (us) |   p99 (us) |      n |")
    print("|--------------------------------------------------|------------|------------|--------|")
    print("\n".join(rows))


def model_call_rows() -> list[str]:
    """LiteLLM against a plain HTTP request to the same local server: wall and this
    process's CPU per call (issue 19: LiteLLM's own overhead per model call)."""
    answer = ModelResponse(ChatMessage("assistant", "ok"), TokenUsage(1, 1))
    rows = []
    with ReplayServer(Cassette.from_responses([answer])) as server:
        model = LiteLLMModel(api_base=server.api_base, api_key="bench")
        messages = [ChatMessage("user", "ping")]
        url = urlsplit(server.api_base)
        body = json.dumps({"model": "replay", "messages": [{"role": "user", "content": "ping"}]})
        connection = http.client.HTTPConnection(url.hostname or "", url.port)

        def plain_http() -> None:
            connection.request("POST", url.path.rstrip("/") + "/chat/completions", body,
                               {"Content-Type": "application/json"})  # fmt: skip
            json.loads(connection.getresponse().read())

        for name, call in (("LiteLLM model call", lambda: model.generate(messages)),
                           ("plain HTTP request (http.client + json)", plain_http)):  # fmt: skip
            call()  # the first LiteLLM call imports it (seconds): not a call's cost
            cpu = time.process_time()
            samples = measure(call, 300)
            per_call_cpu = (time.process_time() - cpu) / (300 + 3) * 1e6  # with the warm-ups
            rows.append(row(f"{name}, local replay server", samples))
            rows.append(f"| {'  => this process CPU per call':<48} | {per_call_cpu:>10.0f} |"
                        f"            |        |")  # fmt: skip
        connection.close()
    return rows


def _plain(n: int) -> int:
    import math

    return math.factorial(n)


if __name__ == "__main__":
    main()
