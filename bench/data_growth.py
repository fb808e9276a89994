"""Data growth under hostile traffic: what one service keeps on disk, over time.

Run by hand: ``.venv/bin/python bench/data_growth.py [--seconds 120] [--every 10]
[--clients 8] [--limit-mb N] [--content truncated|full]``.
Starts the seed mesh's research specialist (a tool-calling agent with the
durable memo, replaying its cassette) as a real service whose data directory
is a temporary one, and sends it hostile traffic from several clients at once:

- runs of the largest task allowed (100,000 characters), each under a run id
  of its own and a parent run id (audit entries, spans, a run-ledger row each);
- the seed task under a run id of its own (a run that finishes, with its
  response recorded for a retry);
- memo writes of the largest value allowed under fresh keys, through CallTool;
- random bytes, and messages with random values in every field, to every
  method.

Every ``--every`` seconds it prints the data directory's size, split by what
holds it, and the requests sent so far; a status other than a clear refusal
(INTERNAL, UNKNOWN, UNAVAILABLE) counts as an error. At the end it times
``mesh trace`` and ``mesh audit`` over what is left, with their peak memory.
``--limit-mb`` sets ``MESH_DATA_LIMIT_MB`` (default: the service's default);
``--content full`` keeps whole prompts and outputs in audit and traces
(``MESH_LOG_CONTENT``). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from sustained_load import write_seed_mesh

from mesh._proto import agent_pb2 as pb
from mesh.launcher import MeshProcesses
from mesh.models.replay import Cassette
from mesh.project import load_mesh_config

AGENT = "research_specialist"
SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"]
BIG_TASK_CHARS = 100_000
BIG_VALUE_CHARS = 60_000
UNEXPECTED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
PARTS = {"audit": "audit", "traces": "traces", "run ledger": "runs"}
HEADER = """\
| time (s) | data dir (MB) | audit | traces | run ledger | memo | requests | errors |
|----------|---------------|-------|--------|------------|------|----------|--------|"""
PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def hostile_string(rng: random.Random) -> str:
    return rng.choice([
        "", "x" * rng.randint(1, 200_000), "".join(rng.choices(string.printable, k=300)),
        "[" * 50_000 + "]" * 50_000, '{"action": "set"}', "memo", "\x00\ud7ff\U0010ffff",
        uuid.uuid4().hex,
    ])  # fmt: skip


def random_message(descriptor: Any, rng: random.Random, depth: int = 0) -> Any:
    """A message of ``descriptor``'s type with random values in random fields."""
    message = getattr(pb, descriptor.name)()
    for field in descriptor.fields:
        if rng.random() < 0.4 or field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue  # scalars only: nested messages would mostly repeat the same shapes
        value: Any
        if field.type == FieldDescriptor.TYPE_STRING:
            value = hostile_string(rng)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = rng.random() < 0.5
        elif field.type == FieldDescriptor.TYPE_DOUBLE:
            value = rng.choice([0.0, -1.0, 1e308, float("inf"), rng.random()])
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = rng.choice([v.number for v in field.enum_type.values])
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            value = rng.choice([0, -1, 1, 2**31 - 1])
        else:
            continue
        try:
            setattr(message, field.name, value)
        except (TypeError, ValueError):
            continue
    return message


class Traffic:
    """Clients sending hostile requests back to back until told to stop; counts by kind."""

    def __init__(self, address: str, clients: int, seed_task: str) -> None:
        self.address = address
        self.seed_task = seed_task
        self.sent: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True)
                         for n in range(clients)]  # fmt: skip

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, n: int) -> None:
        rng = random.Random(n)
        channel = grpc.insecure_channel(self.address)
        kinds = ["big run", "seed run", "memo write", "random bytes", "random fields"]
        while not self._stop.is_set():
            kind = rng.choice(kinds)
            method, data = self._request(kind, rng)
            code = call_raw(channel, method, data)
            with self._lock:
                self.sent[kind] += 1
                if code in UNEXPECTED:
                    self.errors[f"{kind}: {code.name}"] += 1
        channel.close()

    def _request(self, kind: str, rng: random.Random) -> tuple[Any, bytes]:
        methods = SERVICE.methods_by_name
        run_id = f"hostile-{uuid.uuid4().hex}"
        if kind == "big run":
            task = "".join(rng.choices(string.ascii_letters + " ", k=BIG_TASK_CHARS))
            request = pb.RunRequest(task=task, run_id=run_id, parent_run_id=uuid.uuid4().hex)
            return methods["Run"], request.SerializeToString()
        if kind == "seed run":
            request = pb.RunRequest(task=self.seed_task, run_id=run_id)
            return methods["Run"], request.SerializeToString()
        if kind == "memo write":
            arguments = {"action": "set", "key": uuid.uuid4().hex, "value": "v" * BIG_VALUE_CHARS}
            request = pb.CallToolRequest(name="memo", arguments_json=json.dumps(arguments))
            return methods["CallTool"], request.SerializeToString()
        method = rng.choice(list(SERVICE.methods))
        if kind == "random bytes":
            return method, rng.randbytes(rng.randint(0, 300))
        return method, random_message(method.input_type, rng).SerializeToString()


def call_raw(channel: grpc.Channel, method: Any, data: bytes) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(data, timeout=30):
                pass
        else:
            channel.unary_unary(path)(data, timeout=30)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    files = path.rglob("*") if path.exists() else ()
    return sum(p.stat().st_size for p in files if p.is_file()) / 2**20


def memo_mb(data: Path) -> float:
    return sum(size_mb(p) for p in data.glob("memo.sqlite3*"))


def peak(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``command``."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True,
                         text=True, env=env, check=True).stdout  # fmt: skip
    return time.monotonic() - started, int(out.split()[-1]) / 1024


def print_row(elapsed: float, data: Path, traffic: Traffic) -> None:
    parts = {name: size_mb(data / sub) for name, sub in PARTS.items()}
    parts["memo"] = memo_mb(data)
    print(f"| {elapsed:8.0f} | {size_mb(data):13.1f} | {parts['audit']:5.1f} | "
          f"{parts['traces']:6.1f} | {parts['run ledger']:10.1f} | {parts['memo']:4.1f} | "
          f"{sum(traffic.sent.values()):8} | {sum(traffic.errors.values()):6} |",
          flush=True)  # fmt: skip


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--seconds", type=float, default=120.0)
    options.add_argument("--every", type=float, default=10.0, help="seconds between rows")
    options.add_argument("--clients", type=int, default=8)
    options.add_argument("--limit-mb", type=int, help="MESH_DATA_LIMIT_MB for the service")
    options.add_argument("--content", choices=["truncated", "full"], default="truncated")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-data-growth-") as tmp:
        data = Path(tmp) / "data"
        env = {"MESH_AUDIT_DIR": str(data / "audit"), "MESH_TRACE_DIR": str(data / "traces"),
               "MESH_RUNS_DIR": str(data / "runs"), "MESH_MEMO_PATH": str(data / "memo.sqlite3"),
               "MESH_TOOL_LOG_DIR": str(data / "tool-changes"), "XDG_DATA_HOME": str(data),
               "MESH_LOG_CONTENT": args.content}  # fmt: skip
        if args.limit_mb:
            env["MESH_DATA_LIMIT_MB"] = str(args.limit_mb)
        config = load_mesh_config(write_seed_mesh(Path(tmp), 0))
        seed_task = Cassette.load(config.agent(AGENT).cassette or "").tasks[0]
        limit = f"{args.limit_mb} MB" if args.limit_mb else "the default"
        print(f"Data growth: {AGENT} under hostile traffic from {args.clients} clients for "
              f"{args.seconds:g} s, data limit {limit}, content {args.content}")  # fmt: skip
        print(HEADER)
        with (
            MeshProcesses(config, env=env, only=(AGENT,), log_dir=Path(tmp) / "logs") as mesh,
            Traffic(mesh.services[0].address, args.clients, seed_task) as traffic,
        ):
            began = time.monotonic()
            for row in range(int(args.seconds // args.every) + 1):
                time.sleep(max(0.0, began + row * args.every - time.monotonic()))
                print_row(time.monotonic() - began, data, traffic)
        print(f"data dir once the service stopped: {size_mb(data):.1f} MB")
        print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(traffic.sent.items())))
        if traffic.errors:
            print("unexpected: " + ", ".join(f"{k} x{v}" for k, v in traffic.errors.items()))
        reader_env = {**os.environ, **env}
        mesh = [sys.executable, "-m", "mesh"]
        seconds, rss = peak([*mesh, "trace", "--dir", str(data / "traces")], reader_env)
        print(f"mesh trace over {size_mb(data / 'traces'):.1f} MB: {seconds:.1f} s, "
              f"peak RSS {rss:.0f} MB")  # fmt: skip
        seconds, rss = peak([*mesh, "audit", "no-such-run", "--dir", str(data / "audit")],
                            reader_env)  # fmt: skip
        print(f"mesh audit over {size_mb(data / 'audit'):.1f} MB: {seconds:.1f} s, "
              f"peak RSS {rss:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
