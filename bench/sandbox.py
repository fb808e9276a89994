"""The sandbox's cost: isolation's CPU, the zygote, first and warm snippets, tool calls, compute.

Issue 19's anchors: an isolated run should cost at most half the CPU of
spawning a bare ``python3 -S -c pass``; a run's first snippet within 2 ms
p50; a warm snippet round trip under 100 us p50.

Run by hand: ``make bench`` (which installs smolagents into .venv-bench only
for the comparison), or ``.venv/bin/python bench/sandbox.py`` without it.
Prints a table; nothing is asserted.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from machine import machine_cpu_s  # bench/machine.py

from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.nsjail_executor import NsjailExecutor
from mesh.sandbox.snippet import DEFAULT_AUTHORIZED_IMPORTS
from mesh.sandbox.zygotes import Zygote

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


def cost_per_run(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall, machine CPU) per call of ``fn``, in ms, over ``repeat`` calls in a row."""
    fn()
    cpu, started = machine_cpu_s(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return (
        (time.perf_counter() - started) / repeat * 1e3,
        (machine_cpu_s() - cpu) / repeat * 1e3,
    )


def isolated_run(config: SandboxConfig) -> None:
    """A whole isolated run: a fresh interpreter, one snippet, its end."""
    executor = NsjailExecutor(config)
    executor.run("x = 1", NoopBridge())
    executor.close()


def bare_python() -> None:
    subprocess.run([SandboxConfig().python, "-S", "-c", "pass"], check=True)


def cpu_rows(config: SandboxConfig) -> list[str]:
    """Twice each, alternating, so that the machine's drift shows; each pair's CPU ratio
    (issue 19's aim: at most 0.5)."""
    rows = []
    for _ in range(2):
        bare = cost_per_run(bare_python, 200)
        isolated = cost_per_run(lambda: isolated_run(config), 500)
        for name, (wall, cpu), repeat in (
            ("spawn a bare `python3 -S -c pass`", bare, 200),
            ("an isolated run: fork, x = 1, end", isolated, 500),
        ):
            rows.append(f"| {name:<46} | {wall:>8.2f} ms | {cpu:>8.2f} ms | {repeat:>5} |")
        rows.append(f"| {'=> CPU of an isolated run / a bare spawn':<46} | {'':>11} | "
                    f"{isolated[1] / bare[1]:>11.2f} |       |")  # fmt: skip
    return rows


def zygote_start(config: SandboxConfig) -> list[float]:
    """A zygote started (nsjail, interpreter, preloads) until its first run is ready."""

    def start() -> None:
        zygote = Zygote(config, DEFAULT_AUTHORIZED_IMPORTS)
        zygote.spawn().wait_ready(10)
        zygote.close()

    return samples(start, 10, warmup=1)


def first_snippet(config: SandboxConfig) -> list[float]:
    """A run's first snippet: it takes the spare interpreter the zygote forked while idle."""
    out = []
    for _ in range(300):
        executor = NsjailExecutor(config)
        started = time.perf_counter()
        executor.run("x = 1", NoopBridge())
        out.append(time.perf_counter() - started)
        executor.close()
        time.sleep(0.01)  # a run every 10 ms: the zygote forks the next spare in between
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
    config = SandboxConfig(wall_seconds=60)
    executor = NsjailExecutor(config)
    executor.run("x = 0", NoopBridge())
    rows = [
        row("zygote start to its first run ready", zygote_start(config), "ms"),
        row("a run's first snippet (x = 1)", first_snippet(config), "ms"),
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
    print()
    print("| cost of isolation (machine-wide CPU)           |  wall/run   |   CPU/run   |     n |")
    print("|------------------------------------------------|-------------|-------------|-------|")
    print("\n".join(cpu_rows(config)))


if __name__ == "__main__":
    main()
