"""What shared state in PostgreSQL costs, against the embedded SQLite files.

Run by hand: ``.venv/bin/python bench/shared_state.py [RUNS]``. Starts its own
PostgreSQL server (Debian's binaries, as the tests do) in a temporary
directory. Prints two tables; asserts nothing.

- Memo writes, one writer and four at once: writes per second, p50 and p99.
- A delegated run: the seed math specialist (replayed model, code in the
  jail) called with a caller's run id, so that the ledger claims it and its
  record is kept; files, one replica on PostgreSQL, and two replicas on
  PostgreSQL behind round robin, in alternating blocks so that the machine's
  drift falls on every side alike. The aim (issue 20): shared state adds under
  2 ms p50 to a delegated run.
- The seed scenario (manager, research specialist with the memo, math
  specialist), files against PostgreSQL, alternating.
- The replica bench (``replicas.py``: two replicas, 16 clients, 250 ms model
  calls), files against PostgreSQL.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicas import CONFIG as REPLICAS_CONFIG  # bench/replicas.py
from replicas import SEED_CASSETTE, drive

from mesh.cli.mesh_commands import on_free_ports
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from mesh.state.database import Database
from mesh.state.memo import PostgresMemoStore
from mesh.tools.memo import MemoTool
from tests.postgres_server import PostgresServer

TASK = "What is the smallest prime factor of 2015? Answer with the number only."
SEED = Path(__file__).resolve().parent.parent / "services" / "math_specialist" / "cassette.jsonl"
CONFIG = """
[mesh]
replay = "always"

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic."
address = {addresses}
tools = ["smallest_prime_factor"]
cassette = "{cassette}"
"""
BLOCK = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memo_writes(memo: MemoTool, writers: int, writes: int) -> tuple[float, list[float]]:
    """Writes per second and each write's latency (ms)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        mine = []
        for i in range(writes):
            started = time.perf_counter()
            memo.set(f"w{worker}-{i}", {"value": i})
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return writers * writes / (time.perf_counter() - started), latencies


def bench_memo(server: PostgresServer, directory: Path) -> None:
    database = Database(server.create_database("memo_bench")).open()
    stores = {
        "SQLite file": MemoTool(directory / "memo.sqlite3"),
        "PostgreSQL": MemoTool(store=PostgresMemoStore(database)),
    }
    print("\nMemo writes (synchronous, each committed before it returns)")
    print(f"{'store':<14}{'writers':>8}{'writes/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for writers in (1, 4):
        for name, memo in stores.items():
            rate, latencies = memo_writes(memo, writers, 400 // writers)
            print(f"{name:<14}{writers:>8}{rate:>10.0f}{statistics.median(latencies):>9.2f}"
                  f"{percentile(latencies, 0.99):>9.2f}")  # fmt: skip
    database.close()


def start_mesh(stack: ExitStack, directory: Path, replicas: int, env: dict[str, str]
               ) -> AgentClient:  # fmt: skip
    directory.mkdir(parents=True)
    addresses = "[" + ", ".join(['"127.0.0.1:0"'] * replicas) + "]"
    (directory / "mesh.toml").write_text(CONFIG.format(addresses=addresses, cassette=SEED))
    config = load_mesh_config(directory / "mesh.toml")
    data = {name: str(directory / name.lower()) for name in (
        "MESH_AUDIT_DIR", "MESH_TRACE_DIR", "MESH_RUNS_DIR", "MESH_SESSIONS_DIR",
        "MESH_TOOL_LOG_DIR")}  # fmt: skip
    mesh = stack.enter_context(MeshProcesses(config, env={**data, **env},
                                             log_dir=directory / "logs"))  # fmt: skip
    client = stack.enter_context(AgentClient(mesh.addresses["math_specialist"],
                                             agent="math_specialist"))  # fmt: skip
    for _ in range(5):  # warm: pools, connections, the jail's spare
        client.run(TASK, run_id=f"warm-{uuid.uuid4().hex}")
    return client


def bench_runs(server: PostgresServer, directory: Path, runs: int) -> None:
    with ExitStack() as stack:
        sides = {
            "files": start_mesh(stack, directory / "files", 1, {}),
            "PostgreSQL": start_mesh(stack, directory / "pg1", 1,
                                     {"MESH_STATE_DSN": server.create_database("runs1")}),
            "PostgreSQL x2": start_mesh(stack, directory / "pg2", 2,
                                        {"MESH_STATE_DSN": server.create_database("runs2")}),
        }  # fmt: skip
        latencies: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(max(1, runs // BLOCK)):
            for name, client in sides.items():
                for _ in range(BLOCK):
                    started = time.perf_counter()
                    client.run(TASK, run_id=uuid.uuid4().hex)
                    latencies[name].append((time.perf_counter() - started) * 1000)
        base = statistics.median(latencies["files"])
        print(f"\nA delegated run with a caller's run id ({runs} each, blocks of {BLOCK})")
        print(f"{'state':<15}{'p50 ms':>8}{'p99 ms':>8}{'p50 added':>11}  aim: added < 2 ms")
        for name, values in latencies.items():
            p50 = statistics.median(values)
            added = "" if name == "files" else f"{p50 - base:+.2f}"
            print(f"{name:<15}{p50:>8.2f}{percentile(values, 0.99):>8.2f}{added:>11}")


def bench_seed(server: PostgresServer, directory: Path, runs: int) -> None:
    root = Path(__file__).resolve().parent.parent
    config = on_free_ports(load_mesh_config(root / "mesh.toml"))  # two meshes at once
    with ExitStack() as stack:
        sides: dict[str, AgentClient] = {}
        for name, extra in (("files", {}), ("PostgreSQL", _state(server, "seed"))):
            data = {var: str(directory / f"seed-{name}" / var.lower()) for var in (
                "MESH_AUDIT_DIR", "MESH_TRACE_DIR", "MESH_RUNS_DIR", "MESH_SESSIONS_DIR",
                "MESH_TOOL_LOG_DIR", "MESH_MEMO_PATH")}  # fmt: skip
            logs = directory / f"seed-{name}-logs"
            mesh = stack.enter_context(MeshProcesses(config, env={**data, **extra}, log_dir=logs))
            sides[name] = stack.enter_context(
                AgentClient(mesh.addresses["manager"], agent="manager")
            )
            sides[name].run(config.task)  # warm
        latencies: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(max(1, runs // 5)):
            for name, client in sides.items():
                for _ in range(5):
                    started = time.perf_counter()
                    client.run(config.task, run_id=uuid.uuid4().hex)
                    latencies[name].append((time.perf_counter() - started) * 1000)
    base = statistics.median(latencies["files"])
    print(f"\nThe seed scenario (3 services, memo, 2 delegations; {len(latencies['files'])} each)")
    print(f"{'state':<15}{'p50 ms':>8}{'p99 ms':>8}{'p50 added':>11}")
    for name, values in latencies.items():
        added = "" if name == "files" else f"{statistics.median(values) - base:+.2f}"
        print(f"{name:<15}{statistics.median(values):>8.2f}{percentile(values, 0.99):>8.2f}"
              f"{added:>11}")  # fmt: skip


def bench_replicas(server: PostgresServer, directory: Path, seconds: float) -> None:
    print(f"\nThe replica bench (2 replicas, 16 clients, 250 ms model calls, {seconds:g} s)")
    print(f"{'state':<15}{'runs/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'busy':>6}")
    for name, extra in (
        ("files", {}),
        ("PostgreSQL", {"MESH_STATE_DSN": server.create_database("replicas")}),
    ):
        where = directory / f"replicas-{name}"
        where.mkdir()
        (where / "mesh.toml").write_text(REPLICAS_CONFIG.format(
            addresses='["127.0.0.1:0", "127.0.0.1:0"]', cassette=SEED_CASSETTE))  # fmt: skip
        config = load_mesh_config(where / "mesh.toml")
        env = {"XDG_DATA_HOME": str(where), **extra}
        with MeshProcesses(config, env=env, log_dir=where / "logs") as mesh:
            latencies, busy = drive(mesh.addresses["math_specialist"], 16, seconds)
        values = [x * 1000 for x in latencies]
        print(f"{name:<15}{len(values) / seconds:>8.1f}{statistics.median(values):>8.1f}"
              f"{percentile(values, 0.99):>8.1f}{busy:>6}")  # fmt: skip


def _state(server: PostgresServer, database: str) -> dict[str, str]:
    return {"MESH_STATE_DSN": server.create_database(database)}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 200
    logging.basicConfig(level=logging.WARNING)
    server = PostgresServer()
    try:
        server.start()
        with tempfile.TemporaryDirectory() as scratch:
            if "--only-meshes" not in sys.argv:
                bench_memo(server, Path(scratch))
                bench_runs(server, Path(scratch), runs)
            bench_seed(server, Path(scratch), runs // 4)
            bench_replicas(server, Path(scratch), 10.0)
    finally:
        server.close()


if __name__ == "__main__":
    main()
