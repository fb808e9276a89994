"""Sustained load: many clients running tasks through the full mesh, and what it leaves behind.

Run by hand: ``.venv/bin/python bench/sustained_load.py [SECONDS_PER_LEVEL] [--secure]``;
``--secure`` runs every call, the clients' and the services', over mutual TLS
with bearer tokens (a throwaway CA, as ``mesh certs`` makes).
The seed mesh, all three services (the manager and the math specialist are
code agents in jails; the research specialist searches its bundled corpus and
writes the durable memo), replays its recorded seed run with every model call
taking a fixed latency, and takes 10, 100, then 500 concurrent clients, each
sending the seed task back to back for a fixed time, then 100 again, so that
memory at the same load can be compared before and after the peak. A client told
RESOURCE_EXHAUSTED (a service at its run limit) waits a little and tries
again, as a gRPC client should; that is counted apart from errors. Each
client is a thread calling through ``AgentClient``, as a mesh's own callers do. A wrong
answer is an error. Per level: completed runs, errors, p50/p99 latency, and
each service's RSS, open file descriptors and threads before and after. At
the end: run interpreters still alive under the services once idle (must be
none: each code agent keeps only its zygote, two processes in one nsjail),
and nsjail processes on the whole machine after the mesh stops (must be none). Everything the
services write goes to a temporary directory. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mesh_services import percentiles, rss_mb

from mesh.errors import BusyError, MeshError
from mesh.launcher import MeshProcesses
from mesh.models.replay import Cassette
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from mesh.rpc.dev_credentials import DevCredentials, new_token, write_dev_credentials
from mesh.rpc.security import MeshSecurity

LEVELS = (10, 100, 500, 100)  # back to 100: does memory keep growing at the same load?
CLIENTS_PER_CHANNEL = 50
LATENCY_MS = 50
SETTLE_S = 2.0
SEED_CONFIG = Path(__file__).parent.parent / "mesh.toml"
SEED = load_mesh_config(SEED_CONFIG)
ANSWER = "gRPC was open-sourced in 2015"
CONFIG = """
[mesh]
entry = "manager"
replay = "always"
replay_latency_ms = {latency}
{agents}
"""


def write_seed_mesh(directory: Path, latency_ms: int, auth: str = "") -> Path:
    """The seed mesh (services/) on free ports, replaying its cassettes at ``latency_ms`` a call,
    with ``auth`` (an ``[auth]`` table) if given."""
    agents = []
    for agent in SEED.agents.values():
        lists = {"tools": list(agent.tools), "managed_agents": list(agent.managed_agents)}
        agents.append(
            f"""
[agents.{agent.name}]
kind = "{agent.kind}"
description = "{agent.description}"
address = "127.0.0.1:0"
cassette = "{agent.cassette}"
max_concurrent_runs = 64
"""
            + (f'agent = "{agent.factory}"\n' if agent.factory else "")
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in lists.items() if value)
        )
    text = CONFIG.format(latency=latency_ms, agents="".join(agents))
    (directory / "mesh.toml").write_text(text + auth)
    return directory / "mesh.toml"


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def jails_under(pid: int) -> tuple[int, int]:
    """(zygotes, run interpreters) below ``pid``: a zygote is an nsjail with two processes."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines()]
    children: dict[int, list[tuple[int, str]]] = {}
    for p, parent, comm in rows:
        children.setdefault(int(parent), []).append((int(p), comm))
    zygotes, jailed, todo, inside = 0, 0, [(pid, False)], False
    while todo:
        parent, inside = todo.pop()
        for child, comm in children.get(parent, []):
            zygotes += comm == "nsjail"
            jailed += inside
            todo.append((child, inside or comm == "nsjail"))
    return zygotes, jailed - 2 * zygotes


def jails_on_machine() -> int:
    out = subprocess.run(["pgrep", "-c", "-x", "nsjail"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


class Caller:
    """How the clients reach the manager: plaintext, or mutual TLS with a bearer token."""

    def __init__(self, target: str, credentials: DevCredentials | None = None) -> None:
        self.target = target
        self.security = None
        if credentials is not None:
            self.security = MeshSecurity(tls_cert=credentials.cert, tls_key=credentials.key,
                                         tls_ca=credentials.ca,
                                         client_token=credentials.tokens["client"])  # fmt: skip

    def client(self) -> AgentClient:
        return AgentClient(self.target, security=self.security)


def drive(caller: Caller, clients: int, seconds: float) -> tuple[list[float], int, int]:
    """Latencies of completed runs, errors, and busy answers that were retried."""
    channels = [caller.client() for _ in range(max(1, clients // CLIENTS_PER_CHANNEL))]
    latencies: list[float] = []
    errors = busy = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(n: int) -> None:
        nonlocal errors, busy
        manager = channels[n % len(channels)]
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            while True:
                try:
                    reply = manager.run(SEED.task, timeout_s=120)
                except BusyError:
                    with lock:
                        busy += 1
                    time.sleep(random.uniform(0.02, 0.1))
                    continue
                except MeshError as err:
                    with lock:
                        errors += 1
                    print(f"  error: {err.code}: {err.message}", file=sys.stderr)
                    break
                if not reply.answer_text.startswith(ANSWER):
                    with lock:
                        errors += 1
                    print(f"  wrong answer: {reply.answer_text[:200]}", file=sys.stderr)
                    break
                with lock:
                    latencies.append(time.perf_counter() - started)
                break

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    return latencies, errors, busy


def snapshot(pids: dict[str, int]) -> dict[str, tuple[float, int, int]]:
    return {agent: (rss_mb(pid), fds(pid), threads(pid)) for agent, pid in pids.items()}


def main() -> None:
    logging.disable(logging.WARNING)
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("seconds", type=float, nargs="?", default=20.0, help="per level")
    options.add_argument("--secure", action="store_true", help="mutual TLS and tokens")
    args = options.parse_args()
    seconds = args.seconds
    load_rows, resource_rows = [], []
    with tempfile.TemporaryDirectory(prefix="mesh-load-") as tmp:
        credentials = None
        if args.secure:
            credentials = write_dev_credentials(
                Path(tmp) / "credentials", tokens={"mesh": new_token(), "client": new_token()}
            )
        auth = credentials.auth_table("mesh") if credentials else ""
        config = load_mesh_config(write_seed_mesh(Path(tmp), LATENCY_MS, auth))
        env = {"XDG_DATA_HOME": tmp}  # memo, audit and trace files
        with MeshProcesses(config, env=env, log_dir=Path(tmp) / "logs") as mesh:
            pids = {s.agent: s.process.pid for s in mesh.services}
            caller = Caller(mesh.addresses["manager"][0], credentials)
            drive(caller, 4, 2.0)  # warm up: zygotes started, code paths loaded
            for clients in LEVELS:
                before = snapshot(pids)
                began = time.monotonic()
                latencies, errors, busy = drive(caller, clients, seconds)
                elapsed = time.monotonic() - began
                time.sleep(SETTLE_S)  # let finished runs' interpreters be reaped
                after = snapshot(pids)
                p50, p99 = percentiles(latencies) if latencies else (0.0, 0.0)
                load_rows.append(f"| {clients:>7} | {len(latencies):>9} | {errors:>6} | "
                                 f"{busy:>8} | {len(latencies) / elapsed:>7.1f} | "
                                 f"{p50 * 1e3:>9.0f} | {p99 * 1e3:>9.0f} |")  # fmt: skip
                for agent in pids:
                    (rss0, fd0, th0), (rss1, fd1, th1) = before[agent], after[agent]
                    resource_rows.append(f"| {clients:>7} | {agent:<19} | {rss0:>6.1f} -> "
                                         f"{rss1:>6.1f} | {fd0:>4} -> {fd1:>4} | "
                                         f"{th0:>4} -> {th1:>4} |")  # fmt: skip
            idle_jails = {agent: jails_under(pid) for agent, pid in pids.items()}
        after_stop = jails_on_machine()

    calls = sum(len(Cassette.load(a.cassette or "").entries) for a in SEED.agents.values())
    print(
        f"Sustained load: the seed mesh (3 services, 2 jails, a web search and a memo write "
        f"per run), {calls} model calls of {LATENCY_MS} ms per run, {seconds:g} s per level"
    )
    print("| clients | completed | errors | busy*    | runs/s  | p50 (ms)  | p99 (ms)  |")
    print("|---------|-----------|--------|----------|---------|-----------|-----------|")
    print("\n".join(load_rows))
    print("* RESOURCE_EXHAUSTED answers (service at its run limit), retried by the client")
    print()
    print(f"Resources before each level and {SETTLE_S:g} s after it")
    print("| clients | service             | RSS MB          | open fds     | threads      |")
    print("|---------|---------------------|-----------------|--------------|--------------|")
    print("\n".join(resource_rows))
    print()
    for agent, (zygotes, interpreters) in idle_jails.items():
        print(f"under {agent} once idle: {zygotes} zygote(s), {interpreters} run interpreter(s)")
    print(f"nsjail processes on the machine after the mesh stopped: {after_stop}")


if __name__ == "__main__":
    main()
