"""The mesh's cost: a delegation over gRPC, a scenario end to end, load, memory.

Run by hand: ``make bench`` (smolagents is installed there for comparison).
Starts real services (one process per agent, code in jails) on free ports,
with replay models; prints tables; asserts nothing.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import machine_cpu_s  # bench/machine.py

from mesh import Cassette, ToolCallingAgent
from mesh.errors import MeshError
from mesh.launcher import MeshProcesses
from mesh.models import ReplayModel
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from mesh.rpc.remote import RemoteAgent

TASK = "What is the smallest prime factor of 2015? Use the math specialist."
MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."
ECHO_TASK = "Answer 42."

CONFIG = """
[mesh]
entry = "manager"
replay = "always"
replay_latency_ms = {latency}

[agents.manager]
kind = "code"
description = "Delegates."
address = "127.0.0.1:0"
managed_agents = ["math_specialist"]
cassette = "manager.jsonl"
max_concurrent_runs = 128

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic."
address = "127.0.0.1:0"
tools = ["smallest_prime_factor"]
cassette = "math.jsonl"
max_concurrent_runs = 128

[agents.echo]
kind = "tool-calling"
description = "Answers at once."
address = "127.0.0.1:0"
cassette = "echo.jsonl"
max_concurrent_runs = 128
"""


def code(text: str) -> str:
    return f"Next.\n```python\n{text}\n```"


def write_mesh(directory: Path, latency_ms: int) -> Path:
    def cassette(name: str, task: str, *responses: Any) -> None:
        with (directory / name).open("w") as out:
            for turn, response in enumerate(responses):
                out.write(json.dumps({"task": task, "turn": turn, "response": response}) + "\n")

    cassette("manager.jsonl", TASK,
             {"content": code(f'spf = math_specialist(task="{MATH_TASK}")\nprint(spf)')},
             {"content": code("final_answer(spf)")})  # fmt: skip
    cassette("math.jsonl", MATH_TASK, {"content": code("final_answer(5)")})
    cassette("echo.jsonl", ECHO_TASK, {"content": None, "tool_calls": [
        {"id": "c", "name": "final_answer", "arguments": '{"answer": 42}'}]})  # fmt: skip
    (directory / "mesh.toml").write_text(CONFIG.format(latency=latency_ms))
    return directory / "mesh.toml"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(fn: Callable[[], object], repeat: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def row(name: str, samples: list[float]) -> str:
    p50, p99 = percentiles(samples)
    return f"| {name:<52} | {p50 * 1e3:>8.2f} ms | {p99 * 1e3:>8.2f} ms | {len(samples):>5} |"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency_table(mesh: MeshProcesses) -> list[str]:
    echo_address = mesh.addresses["echo"][0]
    health = AgentClient(echo_address)
    bare = timed(health.health, 2000)
    remote = RemoteAgent("echo", echo_address)
    delegated = timed(lambda: remote.run(ECHO_TASK), 1000)
    echo_cassette = Cassette.load(mesh.config.agent("echo").cassette or "")
    echo_local = ToolCallingAgent([], ReplayModel(echo_cassette), name="echo")
    local = timed(lambda: echo_local.run(ECHO_TASK), 1000)
    manager = AgentClient(mesh.addresses["manager"][0])
    timed(lambda: manager.run(TASK, timeout_s=30), 5, warmup=0)
    cpu = machine_cpu_s()
    scenario = timed(lambda: manager.run(TASK, timeout_s=30), 200, warmup=0)
    cpu_per_run = (machine_cpu_s() - cpu) / len(scenario)
    comparison = smolagents_comparison(lambda: manager.run(TASK, timeout_s=30))
    for client in (health, remote, manager):
        client.close()
    overhead = statistics.median(delegated) - statistics.median(local)
    beyond_bare = overhead - statistics.median(bare)  # issue 19's aim: under 1 ms
    return [
        row("bare gRPC unary call (health Check), loopback", bare),
        row("echo agent run, in-process (1 model call)", local),
        row("echo agent run, delegated over gRPC (RemoteAgent)", delegated),
        f"| {'=> one delegation adds (p50, over the in-process run)':<52} | "
        f"{overhead * 1e3:>8.2f} ms |             |       |",
        f"| {'=> of which beyond a bare gRPC call':<52} | "
        f"{beyond_bare * 1e3:>8.2f} ms |             |       |",
        row("scenario: manager + math specialist, 3 model calls", scenario),
        f"| {'=> CPU per scenario run (whole machine: services, jails)':<52} | "
        f"{cpu_per_run * 1e3:>8.2f} ms |             |       |",
        *comparison,
    ]


def smolagents_comparison(mesh_run: Callable[[], object], blocks: int = 10) -> list[str]:
    """The scenario in the mesh and in smolagents, in alternating blocks of 20 runs, so that
    the machine's drift (it can be 1.8x within an hour here) hits both alike."""
    smolagents_run = smolagents_scenario()
    if smolagents_run is None:
        return [f"| {'smolagents, same scenario in-process':<52} | n/a (run `make bench`) |"]
    for _ in range(5):  # its warm-up, as timed() gave the mesh's
        smolagents_run()
    mesh: list[float] = []
    smol: list[float] = []
    for _ in range(blocks):
        mesh += timed(mesh_run, 20, warmup=0)
        smol += timed(smolagents_run, 20, warmup=0)
    ratio = statistics.median(mesh) / statistics.median(smol)
    return [
        row("scenario again, alternating with smolagents", mesh),
        row("smolagents in-process, agents reused (no isolation)", smol),
        f"| {'=> mesh / smolagents (p50; aim: at most 1)':<52} | {ratio:>11.2f} |             |"
        "       |",
    ]


def smolagents_scenario() -> Callable[[], object] | None:
    """One run of the scenario in smolagents, its agents built once; None without it."""
    try:
        from smolagents import ChatMessage as SmolMessage
        from smolagents import CodeAgent as SmolCodeAgent
        from smolagents.models import Model as SmolModel
    except ImportError:
        return None

    class Scripted(SmolModel):  # type: ignore[misc]
        def __init__(self, answers: list[str]) -> None:
            super().__init__(model_id="scripted")
            self.answers, self.turn = answers, 0

        def generate(self, messages: Any, **kwargs: Any) -> Any:
            answer = self.answers[self.turn % len(self.answers)]
            self.turn += 1
            return SmolMessage(role="assistant", content=answer)

    # Built once and reused, as a user would (each run starts from a fresh memory); the mesh's
    # agents are built once too, when their services start.
    math = SmolCodeAgent(tools=[], model=Scripted(["<code>\nfinal_answer(5)\n</code>"]),
                         name="math_specialist", description="Exact arithmetic.",
                         verbosity_level=0)  # fmt: skip
    manager = SmolCodeAgent(tools=[], managed_agents=[math], verbosity_level=0, model=Scripted([
        f'<code>\nspf = math_specialist(task="{MATH_TASK}")\nprint(spf)\n</code>',
        "<code>\nfinal_answer(spf)\n</code>"]))  # fmt: skip
    return lambda: manager.run(TASK)


def drive(target: str, clients: int, seconds: float) -> tuple[list[float], int, float]:
    """``clients`` threads sending runs back to back for ``seconds``: latencies, errors, time."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        manager = AgentClient(target)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                manager.run(TASK, timeout_s=60)
            except MeshError:
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
        manager.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - began


def load_table(config_dir: Path, latency_ms: int, seconds: float) -> list[str]:
    config = load_mesh_config(write_mesh(config_dir, latency_ms))
    ideal = 3 * latency_ms / 1000  # three sequential model calls per run
    rows = []
    env = {"XDG_DATA_HOME": str(config_dir)}  # the services' memo, audit and trace files
    with MeshProcesses(config, env=env, log_dir=config_dir / "logs") as mesh:
        pids = {s.agent: s.process.pid for s in mesh.services}
        idle = {agent: rss_mb(pid) for agent, pid in pids.items()}
        target = mesh.addresses["manager"][0]
        for clients in (1, 8, 64):
            latencies, errors, elapsed = drive(target, clients, seconds)
            p50, p99 = percentiles(latencies) if latencies else (0.0, 0.0)
            rate = len(latencies) / elapsed
            rows.append(f"| {clients:>7} | {rate:>8.1f} | {clients / ideal:>8.1f} | "
                        f"{rate / (clients / ideal):>6.2f} | {p50 * 1e3:>8.1f} | "
                        f"{p99 * 1e3:>8.1f} | {errors:>6} |")  # fmt: skip
        loaded = {agent: rss_mb(pid) for agent, pid in pids.items()}
    memory = [f"| {agent:<16} | {idle[agent]:>9.1f} | {loaded[agent]:>11.1f} |" for agent in pids]
    return [
        f"Load: seed-like scenario (3 model calls of {latency_ms} ms each), {seconds:g} s per row",
        "| clients | runs/s   | ideal/s  | ratio  | p50 (ms) | p99 (ms) | errors |",
        "|---------|----------|----------|--------|----------|----------|--------|",
        *rows,
        "",
        "| service          | idle RSS  | loaded RSS  |",
        "|------------------|-----------|-------------|",
        *memory,
    ]


def main() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        config = load_mesh_config(write_mesh(Path(tmp), latency_ms=0))
        env = {"XDG_DATA_HOME": tmp}  # the services' memo, audit and trace files
        with MeshProcesses(config, env=env, log_dir=Path(tmp) / "logs") as mesh:
            latency = latency_table(mesh)
        print("Latency (replay models with no latency; code in jails)")
        print(f"| {'measurement':<52} |      p50    |      p99    |     n |")
        print(f"|{'-' * 54}|-------------|-------------|-------|")
        print("\n".join(latency))
        print()
        load_dir = Path(tmp) / "load"
        load_dir.mkdir()
        print("\n".join(load_table(load_dir, latency_ms=50, seconds=float(sys.argv[1])
                                   if len(sys.argv) > 1 else 10.0)))  # fmt: skip


if __name__ == "__main__":
    main()
