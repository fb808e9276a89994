"""Throughput with one and two replicas of the bottleneck specialist.

Run by hand: ``.venv/bin/python bench/replicas.py [SECONDS]``. Each replica
takes at most 4 runs at once and each run makes two model calls of 250 ms
(replayed), so one replica tops out near 8 runs/s; 16 clients delegate
straight to the specialist, retrying when every replica is busy. Prints a
table; asserts nothing.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from mesh.errors import BusyError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.remote import RemoteAgent

TASK = "What is the smallest prime factor of 2015? Answer with the number only."
SEED_CASSETTE = Path(__file__).parent.parent / "services" / "math_specialist" / "cassette.jsonl"
CONFIG = """
[mesh]
replay = "always"
replay_latency_ms = 250

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic."
address = {addresses}
tools = ["smallest_prime_factor"]
cassette = "{cassette}"
max_concurrent_runs = 4
idempotent = true
"""


def drive(addresses: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    remote = RemoteAgent("math_specialist", addresses)
    latencies: list[float] = []
    busy = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal busy
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                remote.run(TASK)
            except BusyError:
                with lock:
                    busy += 1
                time.sleep(0.02)
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    remote.close()
    return latencies, busy


def main() -> None:
    logging.disable(logging.WARNING)
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(
        f"| replicas | runs/s | p50 (ms) | p99 (ms) | busy rejections | ({seconds:g} s, 16 clients)"
    )
    print("|----------|--------|----------|----------|-----------------|")
    for replicas in (1, 2):
        with tempfile.TemporaryDirectory(prefix="mesh-replicas-") as tmp:
            addresses = ", ".join(['"127.0.0.1:0"'] * replicas)
            (Path(tmp) / "mesh.toml").write_text(
                CONFIG.format(addresses=f"[{addresses}]", cassette=SEED_CASSETTE)
            )
            config = load_mesh_config(Path(tmp) / "mesh.toml")
            env = {"XDG_DATA_HOME": tmp}  # the services' audit and trace files
            with MeshProcesses(config, env=env, log_dir=Path(tmp) / "logs") as mesh:
                latencies, busy = drive(mesh.addresses["math_specialist"], 16, seconds)
        ordered = sorted(latencies)
        p99 = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
        print(f"| {replicas:>8} | {len(latencies) / seconds:>6.1f} | "
              f"{statistics.median(ordered) * 1e3 if ordered else 0:>8.1f} | "
              f"{p99 * 1e3:>8.1f} | {busy:>15} |")  # fmt: skip


if __name__ == "__main__":
    main()
