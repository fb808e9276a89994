"""The sandbox's cost: jail start-up, warm round trips, tool calls, compute speed.

Run by hand: ``make bench`` (which installs smolagents into .venv-bench only
for the comparison), or ``.venv/bin/python bench/sandbox.py`` without it.
Prints a table; nothing is asserted.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.jail import Jail
from mesh.sandbox.nsjail import jail_command
from mesh.sandbox.nsjail_executor import NsjailExecutor
from mesh.sandbox.pool import JailPool

SIEVE = """
def sieve(n):
    flags = [True] * (n + 1)
    flags[0] = flags[1] = False
    for i in range(2, int(n ** 0.5) + 1):
        if flags[i]:
            for j in range(i * i, n + 1, i):
                flags[j] = False
    return sum(flags)
count = sieve(300_000)
"""


class NoopBridge:
    def tool_names(self) -> Sequence[str]:
        return ["noop"]

    def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return 1


def samples(fn: Callable[[], object], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def row(name: str, values: list[float], unit: str = "us", per: int = 1) -> str:
    scale = {"us": 1e6, "ms": 1e3}[unit]
    ordered = sorted(v / per * scale for v in values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {name:<46} | {statistics.median(ordered):>9.1f} {unit} | {p99:>9.1f} {unit} |"
        f" {len(values):>5} |"
    )


def cold_start(config: SandboxConfig, first_snippet: bool) -> list[float]:
    """A jail started on demand, timed to "ready" or to its first snippet's result."""
    argv = jail_command(config)

    def start() -> None:
        jail = Jail(argv, cpu_limit_s=config.cpu_seconds)
        jail.wait_ready(10)
        if first_snippet:
            jail.send({"op": "exec", "code": "x = 1", "tools": [], "imports": []})
            jail.receive(10)
        jail.kill()

    return samples(start, 30)


def first_snippet_from_pool(config: SandboxConfig) -> list[float]:
    pool = JailPool(config)
    pool.prime()
    out = []
    for _ in range(30):
        while len(pool._ready) < config.pool_size:  # let the refill finish: off the critical path
            time.sleep(0.005)
        executor = NsjailExecutor(config, pool=pool)
        started = time.perf_counter()
        executor.run("x = 1", NoopBridge())
        out.append(time.perf_counter() - started)
        executor.close()
    pool.close()
    return out


def compute_rows(config: SandboxConfig) -> list[str]:
    plain = samples(lambda: exec(SIEVE, {}), 10, warmup=1)
    executor = NsjailExecutor(config)
    jailed = samples(lambda: executor.run(SIEVE, NoopBridge()), 10, warmup=1)
    executor.close()
    rows = [
        row("sieve(300k): plain CPython, in-process", plain, "ms"),
        row("sieve(300k): in the jail (warm)", jailed, "ms"),
    ]
    try:
        from smolagents.local_python_executor import LocalPythonExecutor
    except ImportError:
        return [
            *rows,
            "| sieve(300k): smolagents LocalPythonExecutor     | n/a (run `make bench`) |",
        ]
    smol = LocalPythonExecutor(additional_authorized_imports=[])
    smol.send_tools({})
    rows.append(
        row(
            "sieve(300k): smolagents LocalPythonExecutor",
            samples(lambda: smol(SIEVE), 3, warmup=1),
            "ms",
        )
    )
    return rows


def main() -> None:
    logging.disable(logging.WARNING)
    config = SandboxConfig(pool_size=2, wall_seconds=60)
    executor = NsjailExecutor(config)
    executor.run("x = 0", NoopBridge())
    rows = [
        row("cold start: nsjail + runner ready", cold_start(config, False), "ms"),
        row("cold start to a first snippet's result", cold_start(config, True), "ms"),
        row("a run's first snippet, jail from the pool", first_snippet_from_pool(config), "ms"),
        row(
            "warm snippet round trip (x = 1)",
            samples(lambda: executor.run("x = 1", NoopBridge()), 2000),
        ),
        row(
            "tool call from jailed code (per call)",
            samples(lambda: executor.run("for _ in range(100):\n    noop()", NoopBridge()), 200),
            per=100,
        ),
    ]
    executor.close()
    rows += compute_rows(config)
    print(
        "| measurement                                    |          p50 |          p99 |     n |"
    )
    print(
        "|------------------------------------------------|--------------|--------------|-------|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
