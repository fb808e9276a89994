"""Cancellation latency: how long a cancelled run goes on while its model is answering.

Run by hand: ``.venv/bin/python bench/cancel_latency.py [--trials N] [--model-s S]``.
One service (a code agent on LiteLLM, in its own process) is pointed at a
local OpenAI-compatible server whose every answer takes ``--model-s``
seconds, as a slow model would. Each trial starts a run, waits until its
model request has arrived and been in flight for a moment, then cancels it,
either with the Cancel RPC or by the client going away (what Ctrl-C in
``mesh run`` does). Measured from the cancel: when the model request ended
(closed by the service, or answered in full), and, for Cancel, when the
run's stream ended with its RunFinished. Prints p50 and max per column.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from mesh.errors import MeshError
from mesh.launcher import MeshProcesses
from mesh.models.base import ChatMessage, ModelResponse, TokenUsage
from mesh.models.replay import Cassette
from mesh.models.replay_server import ReplayServer
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient, EventStream

TASK = "What is 7!?"
CONFIG = """
[mesh]
entry = "math_specialist"
[models]
api_base = "{api_base}"
[agents.math_specialist]
kind = "code"
description = "Arithmetic."
address = "127.0.0.1:0"
tools = ["factorial"]
model = "openai/gpt-4o-mini"
"""
IN_FLIGHT_S = 0.3
"""How long the model request has been going when the cancel comes."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--model-s", type=float, default=2.0, help="each model answer's time")
    args = parser.parse_args()
    answer = ModelResponse(
        ChatMessage(
            "assistant", "Thought: compute.\nCode:\n```py\nfinal_answer(factorial(7))\n```"
        ),
        TokenUsage(50, 10),
    )
    cassette = Cassette.from_responses([answer], task=TASK)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ReplayServer(cassette, latency_s=args.model_s) as model,
    ):
        (Path(tmp) / "mesh.toml").write_text(CONFIG.format(api_base=model.api_base))
        config = load_mesh_config(Path(tmp) / "mesh.toml")
        env = {"OPENAI_API_KEY": "sk-loopback-only", "XDG_DATA_HOME": tmp}
        with MeshProcesses(config, env=env, log_dir=Path(tmp) / "logs") as mesh:
            client = AgentClient(mesh.addresses["math_specialist"][0])
            client.run(TASK, timeout_s=60)  # warm: LiteLLM imported, jail pool
            rows = []
            for how in ("Cancel RPC", "client goes away"):
                results = [trial(client, model, how, i, args.model_s) for i in range(args.trials)]
                rows.append((how, results))
            client.close()
    print(f"\nmodel answer time {args.model_s:.1f} s, cancel {IN_FLIGHT_S:.1f} s into the request, "
          f"{args.trials} trials each (ms after the cancel)")  # fmt: skip
    header = ("cancelled by", "request ended p50", "max", "run ended p50", "max")
    print(f"{header[0]:<18} {header[1]:>18} {header[2]:>8} {header[3]:>14} {header[4]:>8}")
    for how, results in rows:
        ended = [r[0] * 1000 for r in results]
        finished = [r[1] * 1000 for r in results if r[1] is not None]
        run_cols = (f"{statistics.median(finished):>14.1f} {max(finished):>8.1f}" if finished
                    else f"{'-':>14} {'-':>8}")  # fmt: skip
        print(f"{how:<18} {statistics.median(ended):>18.1f} {max(ended):>8.1f} {run_cols}")


def trial(
    client: AgentClient, model: ReplayServer, how: str, number: int, model_s: float
) -> tuple[float, float | None]:
    """(seconds from the cancel to the model request's end, to the run's end or None)."""
    run_id = f"bench-{how[0]}-{number}-{time.time_ns()}"
    before, abandoned = len(model.requests), len(model.abandoned)
    stream = client.run_stream(TASK, run_id=run_id, timeout_s=60)
    reader = threading.Thread(target=lambda: _drain(stream, ends), daemon=True)
    ends: list[float] = []
    reader.start()
    while len(model.requests) == before:
        time.sleep(0.0005)
    arrived = time.monotonic()
    time.sleep(IN_FLIGHT_S)
    cancelled = time.monotonic()
    if how == "Cancel RPC":
        client.cancel(run_id, timeout_s=5)
    else:
        stream.cancel()
    reader.join(30)
    while len(model.abandoned) == abandoned and time.monotonic() < arrived + model_s + 0.5:
        time.sleep(0.001)
    request_end = model.abandoned[-1] if len(model.abandoned) > abandoned else arrived + model_s
    run_end = ends[0] - cancelled if ends and how == "Cancel RPC" else None
    time.sleep(0.2)  # let the service settle before the next trial
    return request_end - cancelled, run_end


def _drain(stream: EventStream, ends: list[float]) -> None:
    try:
        for _ in stream:
            pass
    except MeshError:
        pass
    ends.append(time.monotonic())


if __name__ == "__main__":
    sys.exit(main())
