"""Soak: rounds of normal and hostile traffic through the seed mesh; memory must come back.

Run by hand: ``.venv/bin/python bench/soak.py [--rounds 4] [--seconds 45]``.
The seed mesh as it ships (services/, replaying its cassettes, so no model
key), each service its own process on a free port, everything it writes in a
temporary data directory. Each round is normal traffic (clients running the
seed task through the manager, streamed and unary, some under their own run
ids) alongside hostile traffic against every RPC of every service: random
bytes, random messages, huge tasks, run ids and tool names, deeply nested
JSON, unknown runs cancelled, tools called with random arguments, tool admin
without rights, clients that hang up mid-stream, deadlines that expire
mid-run, messages just under and over the size limit, garbage trace headers.
After each round and a short settle: each service's RSS, threads and open
descriptors, and the data directory's size. A leak grows every round; an
allocator that keeps what was freed plateaus after the first rounds (the
verdict compares round 2 with the last) and holds memory over the idle start.
Asserts nothing; a status a caller cannot act on (INTERNAL, UNKNOWN) is
counted.

The environment reaches the services: ``MALLOC_ARENA_MAX=2``,
``MALLOC_MMAP_THRESHOLD_=131072`` or ``PYTHONTRACEMALLOC=1`` bisect where the
memory goes; ``--traffic normal`` or ``hostile`` runs one kind alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import string
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from mesh_services import rss_mb
from sustained_load import ANSWER, SEED, fds, threads

from mesh._proto import agent_pb2 as pb
from mesh.cli.mesh_commands import on_free_ports
from mesh.launcher import MeshProcesses
from mesh.models.litellm_model import provider_key_name
from mesh.rpc.security import MAX_MESSAGE_BYTES

SETTLE_S = 3.0
GROWTH_MB = 10.0
"""Growth from round 2 to the last beyond this is a leak (rounds vary by a few MB)."""
MALLOC_ENV = ("MALLOC_", "GLIBC_TUNABLES")
SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"]
PREFIX = f"/{SERVICE.full_name}/"
FINE = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "ABORTED", "CANCELLED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "PERMISSION_DENIED", "DEADLINE_EXCEEDED",
        "UNAUTHENTICATED"}  # fmt: skip
HOSTILE_STRINGS = [
    "", " ", "factorial", "final_answer", "memo", "math_specialist", "{}", "[]", "null",
    '{"n": 5}', '{"n": 1e999}', '{"n": -1}', "127.0.0.1:1", "x" * 200_000,
    "[" * 50_000 + "]" * 50_000, '{"a": ' * 20_000 + "1" + "}" * 20_000,
    "\x00\ud7ff\U0010ffff", "../../etc/passwd", "r" * 129, SEED.task,
]  # fmt: skip
TOOLS = ["factorial", "smallest_prime_factor", "celsius_to_fahrenheit", "memo", "web_search",
         "greatest_common_divisor", "least_common_multiple", "final_answer",
         "math_specialist", "research_specialist"]  # fmt: skip


class Tally:
    """Outcomes by kind of traffic and status code."""

    def __init__(self) -> None:
        self.codes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.odd: list[str] = []

    def add(self, kind: str, code: str, detail: str = "") -> None:
        self.codes[kind, code] += 1
        if code not in FINE and len(self.odd) < 20:
            self.odd.append(f"{kind}: {code}: {detail[:200]}")

    def unclear(self) -> int:
        return sum(n for (_, code), n in self.codes.items() if code not in FINE)


def code_of(err: grpc.aio.AioRpcError) -> tuple[str, str]:
    return err.code().name, err.details() or ""


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(HOSTILE_STRINGS)
    alphabet = string.printable + "éß漢\u202e\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice([None, True, -1, 0, 5, 2015, 2**70, 1.5, -0.0, "x", random_text(rng)])
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["n", "a", "b", "celsius", "action", "key", "value", "query", ""]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_message(rng: random.Random, descriptor: Any, depth: int = 0) -> Any:
    """A message of ``descriptor``'s type with random and boundary values in some fields."""
    message = getattr(pb, descriptor.name)()
    for field in descriptor.fields:
        nested = field.type == FieldDescriptor.TYPE_MESSAGE
        too_deep = nested and (depth > 2 or field.message_type.GetOptions().map_entry)
        if too_deep or rng.random() < 0.4:
            continue  # left unset (maps always: requests have none)
        values = [random_value(rng, field, depth) for _ in
                  range(rng.randrange(3) if field.is_repeated else 1)]  # fmt: skip
        if field.is_repeated:
            getattr(message, field.name).extend(values)
        elif nested:
            getattr(message, field.name).CopyFrom(values[0])
        else:
            setattr(message, field.name, values[0])
    return message


def random_value(rng: random.Random, field: Any, depth: int) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return random_message(rng, field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    return {
        FieldDescriptor.TYPE_STRING: lambda: random_text(rng),
        FieldDescriptor.TYPE_BOOL: lambda: rng.random() < 0.5,
        FieldDescriptor.TYPE_INT32: lambda: rng.randint(-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_INT64: lambda: rng.randint(-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_DOUBLE: lambda: rng.choice([0.0, -1.0, 1e308, 1e-9]),
    }[field.type]()


class Hostile:
    """One hostile caller: each ``act`` sends one bad request of a random shape."""

    def __init__(self, channels: dict[str, grpc.aio.Channel], rng: random.Random, tally: Tally):
        self.channels = channels
        self.rng = rng
        self.tally = tally
        self.shapes: list[Callable[[grpc.aio.Channel], Awaitable[None]]] = [
            self.random_bytes, self.random_request, self.random_request, self.huge_task,
            self.unknown_task, self.huge_identifiers, self.tool_with_random_arguments,
            self.tool_with_random_arguments, self.huge_tool_name, self.deep_json,
            self.cancel_unknown, self.hang_up_mid_stream, self.deadline_mid_run,
            self.read_only_calls, self.admin_without_rights, self.oversized,
            self.garbage_trace_headers, self.wrong_agent,
        ]  # fmt: skip

    async def act(self) -> None:
        channel = self.channels[self.rng.choice(list(self.channels))]
        shape = self.rng.choice(self.shapes)
        try:
            await shape(channel)
            self.tally.add(shape.__name__, "OK")
        except grpc.aio.AioRpcError as err:
            code, details = code_of(err)
            self.tally.add(shape.__name__, code, details)

    async def call(self, channel: grpc.aio.Channel, method: str, request: Any,
                   timeout: float = 30, metadata: Any = ()) -> Any:  # fmt: skip
        data = request if isinstance(request, bytes) else request.SerializeToString()
        if SERVICE.methods_by_name[method].server_streaming:
            call = channel.unary_stream(PREFIX + method)(data, timeout=timeout, metadata=metadata)
            return [response async for response in call]
        return await channel.unary_unary(PREFIX + method)(data, timeout=timeout,
                                                          metadata=metadata)  # fmt: skip

    async def random_bytes(self, channel: grpc.aio.Channel) -> None:
        data = self.rng.randbytes(self.rng.randrange(0, 300))
        await self.call(channel, self.rng.choice(list(SERVICE.methods_by_name)), data)

    async def random_request(self, channel: grpc.aio.Channel) -> None:
        method = self.rng.choice(list(SERVICE.methods))
        await self.call(channel, method.name, random_message(self.rng, method.input_type))

    async def huge_task(self, channel: grpc.aio.Channel) -> None:
        size = self.rng.choice([99_999, 100_001, 2_000_000])
        method = self.rng.choice(["Run", "RunStream"])
        await self.call(channel, method, pb.RunRequest(task="y" * size))

    async def unknown_task(self, channel: grpc.aio.Channel) -> None:
        """A task the cassettes do not know (the run fails at its first model call), under a
        caller's run id now and then (one more ledger row)."""
        run_id = uuid.uuid4().hex if self.rng.random() < 0.5 else ""
        request = pb.RunRequest(task=random_text(self.rng) or "?", run_id=run_id,
                                parent_run_id=self.rng.choice(["", uuid.uuid4().hex]))  # fmt: skip
        await self.call(channel, self.rng.choice(["Run", "RunStream"]), request)

    async def huge_identifiers(self, channel: grpc.aio.Channel) -> None:
        field = self.rng.choice(["run_id", "parent_run_id"])
        value = self.rng.choice(["r" * 100_000, "../../x", "\x00", "é" * 200])
        request = pb.RunRequest(task=SEED.task, **{field: value})
        await self.call(channel, self.rng.choice(["Run", "RunStream"]), request)

    async def tool_with_random_arguments(self, channel: grpc.aio.Channel) -> None:
        name = self.rng.choice(TOOLS)
        arguments = random_json(self.rng)
        if name == "memo" and self.rng.random() < 0.5:  # a call that is valid, on a few keys
            action = self.rng.choice(["set", "get", "list", "delete"])
            key = f"soak-{self.rng.randrange(8)}"
            arguments = {"action": action, "key": key, "value": random_json(self.rng)}
        text = json.dumps(arguments, default=str) if self.rng.random() < 0.8 else repr(arguments)
        await self.call(channel, "CallTool", pb.CallToolRequest(name=name, arguments_json=text))

    async def huge_tool_name(self, channel: grpc.aio.Channel) -> None:
        await self.call(channel, "CallTool",
                        pb.CallToolRequest(name="t" * 1_000_000, arguments_json="{}"))  # fmt: skip

    async def deep_json(self, channel: grpc.aio.Channel) -> None:
        depth = self.rng.choice([65, 1000, 300_000])
        deep = '{"n": ' + "[" * depth + "]" * depth + "}"
        await self.call(channel, "CallTool",
                        pb.CallToolRequest(name="factorial", arguments_json=deep))  # fmt: skip

    async def cancel_unknown(self, channel: grpc.aio.Channel) -> None:
        run_id = self.rng.choice([uuid.uuid4().hex, "x" * 100_000, "", "\x00"])
        await self.call(channel, "Cancel", pb.CancelRequest(run_id=run_id))

    async def hang_up_mid_stream(self, channel: grpc.aio.Channel) -> None:
        """The seed task, streamed, and the client gone after a few events."""
        request = pb.RunStreamRequest(task=SEED.task).SerializeToString()
        call = channel.unary_stream(PREFIX + "RunStream")(request, timeout=60)
        wanted = self.rng.randrange(1, 4)
        async for _ in call:
            wanted -= 1
            if not wanted:
                break
        call.cancel()

    async def deadline_mid_run(self, channel: grpc.aio.Channel) -> None:
        timeout = self.rng.uniform(0.02, 0.6)
        method = self.rng.choice(["Run", "RunStream"])
        await self.call(channel, method, pb.RunRequest(task=SEED.task), timeout=timeout)

    async def read_only_calls(self, channel: grpc.aio.Channel) -> None:
        method = self.rng.choice(["Describe", "ListTools", "ToolHistory"])
        await self.call(channel, method, b"")

    async def admin_without_rights(self, channel: grpc.aio.Channel) -> None:
        if self.rng.random() < 0.5:
            spec = pb.ToolSpec(name=random_text(self.rng), description="d" * 10_000)
            request: Any = pb.AddToolRequest(spec=spec, address="127.0.0.1:1", replace=True)
            await self.call(channel, "AddTool", request,
                            metadata=(("authorization", "Bearer " + "z" * 40),))  # fmt: skip
        else:
            await self.call(channel, "RemoveTool", pb.RemoveToolRequest(name="factorial"))

    async def oversized(self, channel: grpc.aio.Channel) -> None:
        size = self.rng.choice([MAX_MESSAGE_BYTES - 4096, MAX_MESSAGE_BYTES + 1024])
        request = pb.CallToolRequest(name="factorial", arguments_json="x" * size)
        await self.call(channel, "CallTool", request)

    async def garbage_trace_headers(self, channel: grpc.aio.Channel) -> None:
        printable = "".join(c for c in random_text(self.rng) if c.isascii() and c.isprintable())
        baggage = ",".join(f"k{n}=v" for n in range(self.rng.randrange(200)))
        tracestate = "k=" + "v" * self.rng.randrange(4000)
        metadata = (("traceparent", printable.strip() or "00-zz"), ("tracestate", tracestate),
                    ("baggage", baggage))  # fmt: skip
        method = self.rng.choice(["Describe", "ListTools", "Cancel"])
        request = pb.CancelRequest(run_id="nope") if method == "Cancel" else b""
        await self.call(channel, method, request, metadata=metadata)

    async def wrong_agent(self, channel: grpc.aio.Channel) -> None:
        await self.call(channel, "Run", pb.RunRequest(task=SEED.task, agent="someone_else"))


async def normal_client(channel: grpc.aio.Channel, stop_at: float, n: int, tally: Tally) -> None:
    """The seed task back to back: unary and streamed in turn, every third with a run id."""
    runs = 0
    while time.monotonic() < stop_at:
        runs += 1
        run_id = f"soak-{uuid.uuid4().hex}" if runs % 3 == 0 else ""
        kind = "Run" if (runs + n) % 2 else "RunStream"
        request = pb.RunRequest(task=SEED.task, run_id=run_id).SerializeToString()
        try:
            if kind == "Run":
                data = await channel.unary_unary(PREFIX + "Run")(request, timeout=120)
                answer = pb.RunResponse.FromString(data).answer_text
            else:
                answer = ""
                stream = channel.unary_stream(PREFIX + "RunStream")(request, timeout=120)
                async for data in stream:
                    for event in pb.RunStreamResponse.FromString(data).events:
                        if event.depth == 0 and event.HasField("final_answer"):
                            answer = event.final_answer.answer_text
        except grpc.aio.AioRpcError as err:
            code, details = code_of(err)
            tally.add(f"normal {kind}", code, details)
            if code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(0.05)
            continue
        tally.add(f"normal {kind}", "OK" if answer.startswith(ANSWER) else "WRONG", answer)


async def hostile_client(hostile: Hostile, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        await hostile.act()


async def one_round(addresses: dict[str, str], args: argparse.Namespace, seed: int) -> Tally:
    tally = Tally()
    channels = {agent: grpc.aio.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 4 * MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)])
        for agent, address in addresses.items()}  # fmt: skip
    stop_at = time.monotonic() + args.seconds
    work = []
    if args.traffic in ("both", "normal"):
        work += [normal_client(channels["manager"], stop_at, n, tally) for n in range(args.clients)]
    if args.traffic in ("both", "hostile"):
        work += [hostile_client(Hostile(channels, random.Random(seed * 1000 + n), tally), stop_at)
                 for n in range(args.hostile)]  # fmt: skip
    await asyncio.gather(*work)
    for channel in channels.values():
        await channel.close()
    return tally


def size_mb(path: Path) -> float:
    """MB of a file, or of the files under a directory (one rotated away meanwhile: 0)."""
    total = 0
    for file in path.rglob("*") if path.is_dir() else [path]:
        with contextlib.suppress(FileNotFoundError):
            total += file.stat().st_size if file.is_file() else 0
    return total / 1e6


def data_sizes(data: Path) -> dict[str, float]:
    """MB under each directory (or file) the services keep in the data directory."""
    return {entry.name: size_mb(entry) for entry in sorted(data.iterdir())} if data.exists() else {}


class Report:
    """The soak table, a row printed as each round is measured (a long soak shows its trend
    as it goes), then the statuses and the verdict."""

    def __init__(self, args: argparse.Namespace, pids: dict[str, int], data: Path) -> None:
        self.pids = pids
        self.data = data
        self.rss: list[dict[str, float]] = []
        self.sizes: list[float] = []
        self.totals: collections.Counter[tuple[str, str]] = collections.Counter()
        self.odd: list[str] = []
        tunables = " ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith(MALLOC_ENV))
        print(f"Soak: the seed mesh, {args.rounds} rounds of {args.seconds:g} s: {args.clients} "
              f"clients running the seed task, {args.hostile} hostile callers (traffic: "
              f"{args.traffic}); {tunables or 'no malloc tunables set'}")  # fmt: skip
        print(f"Each service's RSS MB (threads, open fds) {SETTLE_S:g} s after the round, "
              "and the data directory's MB")  # fmt: skip
        print("| after   | runs ok | hostile | unclear | "
              + " | ".join(f"{a:<24}" for a in pids) + " | data MB | of which")  # fmt: skip
        print("|---------|---------|---------|---------|"
              + "|".join("-" * 26 for _ in pids) + "|---------|---------", flush=True)  # fmt: skip

    def measure(self, label: str, tally: Tally | None = None) -> None:
        time.sleep(SETTLE_S)  # runs cut short finish, their jails are reaped
        usage = {a: (rss_mb(p), threads(p), fds(p)) for a, p in self.pids.items()}
        sizes = data_sizes(self.data)
        self.rss.append({a: rss for a, (rss, _, _) in usage.items()})
        self.sizes.append(sum(sizes.values()))
        runs = ok = hostile = unclear = 0
        if tally is not None:
            self.totals.update(tally.codes)
            self.odd += tally.odd
            runs = sum(n for (kind, _), n in tally.codes.items() if kind.startswith("normal"))
            ok = sum(n for (kind, code), n in tally.codes.items()
                     if kind.startswith("normal") and code == "OK")  # fmt: skip
            hostile, unclear = sum(tally.codes.values()) - runs, tally.unclear()
        cells = " | ".join(f"{rss:>7.1f} ({th:>3} th, {fd:>3} fd) " for rss, th, fd in
                           usage.values())  # fmt: skip
        parts = ", ".join(f"{name} {mb:.1f}" for name, mb in sizes.items())
        print(f"| {label:<7} | {ok:>3}/{runs:<3} | {hostile:>7} | {unclear:>7} | {cells} | "
              f"{self.sizes[-1]:>7.1f} | {parts}", flush=True)  # fmt: skip

    def finish(self) -> None:
        by_kind: dict[str, list[str]] = {}
        for (kind, code), n in sorted(self.totals.items()):
            by_kind.setdefault(kind, []).append(f"{code} {n}")
        print("\nStatuses by kind of request, all rounds:")
        for kind, codes in by_kind.items():
            print(f"  {kind:<28} {', '.join(codes)}")
        if self.odd:
            print("Statuses a caller cannot act on (first few):")
            for line in self.odd[:10]:
                print(f"  {line}")
        if len(self.rss) < 4:
            return
        # From round 2: the first rounds fill what the allocator then keeps (a plateau).
        start, second, last = self.rss[0], self.rss[2], self.rss[-1]
        growth = {agent: last[agent] - second[agent] for agent in last}
        worst = max(growth, key=lambda agent: growth[agent])
        verdict = "flat" if growth[worst] < GROWTH_MB else f"GROWING ({worst})"
        each = ", ".join(f"{agent} {mb:+.1f} MB" for agent, mb in growth.items())
        held = ", ".join(f"{agent} {last[agent] - start[agent]:+.1f} MB" for agent in last)
        print(f"\nVerdict: RSS from round 2 to round {len(self.rss) - 1}: {each}; {verdict}. "
              f"Held at the end over the idle start: {held}. Data directory "
              f"{self.sizes[2]:.1f} -> {self.sizes[-1]:.1f} MB")  # fmt: skip


def main() -> None:
    logging.disable(logging.WARNING)
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--rounds", type=int, default=4)
    options.add_argument("--seconds", type=float, default=45.0, help="per round")
    options.add_argument("--clients", type=int, default=4, help="clients running the seed task")
    options.add_argument("--hostile", type=int, default=8, help="hostile callers")
    options.add_argument("--traffic", choices=["both", "normal", "hostile"], default="both")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-soak-") as tmp:
        config = on_free_ports(SEED)  # the seed mesh as it ships, on free ports
        data = Path(tmp) / "data"
        env = {"XDG_DATA_HOME": str(data)}  # memo, audit, traces, run ledger, tool log
        for agent in config.agents.values():  # no model key: every agent replays
            env[provider_key_name(agent.model or config.default_model)] = ""
        with MeshProcesses(config, env=env, log_dir=Path(tmp) / "logs") as mesh:
            pids = {s.agent: s.process.pid for s in mesh.services}
            addresses = {s.agent: s.address for s in mesh.services}
            report = Report(args, pids, data / "smolmesh")
            report.measure("start")
            for number in range(1, args.rounds + 1):
                tally = asyncio.run(one_round(addresses, args, number))
                report.measure(f"round {number}", tally)
        report.finish()


if __name__ == "__main__":
    main()
