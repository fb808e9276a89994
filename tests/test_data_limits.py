"""What a service keeps on disk has one bound, whatever its callers send; and reading what
it kept (``mesh trace``, ``mesh audit``) takes bounded memory, whatever the files hold."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.cli import main as mesh_main
from mesh.config import load_config
from mesh.data_limit import DEFAULT_DATA_LIMIT_MB
from mesh.errors import ConfigError, ToolExecutionError
from mesh.host.audit import read_run
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rotating_file import RotatingFile
from mesh.telemetry.trace_file import SpanRecord
from mesh.telemetry.trace_view import list_traces
from mesh.tools import MemoTool
from mesh.tools import memo as memo_module

MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."
LIMIT_MB = 2
BIG_TASK_CHARS = 100_000  # the largest a service accepts
ABSURD_LINE_BYTES = 24 * 1024 * 1024


def data_bytes(*directories: Path) -> int:
    return sum(p.stat().st_size for d in directories for p in d.rglob("*") if p.is_file())


def test_a_hammered_service_keeps_its_data_within_its_limit(
    mesh_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs with the largest task allowed, whole in audit and spans (content "full"), each
    under its own run id, and garbage besides: about 10 times the limit is written, and
    the audit log, trace file and run ledger together keep within it."""
    monkeypatch.setenv("MESH_DATA_LIMIT_MB", str(LIMIT_MB))
    monkeypatch.setenv("MESH_LOG_CONTENT", "full")
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(config, only=("math_specialist",), log_dir=tmp_path / "logs") as mesh:
        channel = grpc.insecure_channel(mesh.services[0].address)
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]

        def hostile(n: int) -> None:
            task = f"{n} " + "".join(random.Random(n).choices("abcdef ", k=BIG_TASK_CHARS - 8))
            try:
                stub.Run(pb.RunRequest(task=task, run_id=f"big-{n}", parent_run_id=f"p-{n}"),
                         timeout=30)  # fmt: skip
            except grpc.RpcError as err:  # a task the replayed model does not know
                assert err.code() != grpc.StatusCode.INTERNAL, err.details()
            raw = channel.unary_unary("/smolmesh.v1.AgentService/Run")
            with pytest.raises(grpc.RpcError):
                raw(b"\xff\xfe garbage " * 100, timeout=30)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(hostile, range(200)))
        answer = stub.Run(pb.RunRequest(task=MATH_TASK, run_id="kept-1"), timeout=60)
        retried = stub.Run(pb.RunRequest(task=MATH_TASK, run_id="kept-1"), timeout=60)
        assert answer.answer_json == retried.answer_json == "5"  # the ledger still answers
    directories = [tmp_path / "audit", tmp_path / "traces", tmp_path / "runs"]
    kept = data_bytes(*directories)
    assert kept <= LIMIT_MB * 2**20 + 64 * 1024, kept  # beyond it: SQLite's fixed -shm
    events = [e["event"] for e in read_run(tmp_path / "audit", "kept-1")]
    assert events[0] == "RunStarted" and events[-1] == "RunFinished"  # the newest are kept


def test_the_limit_is_a_mesh_setting_that_the_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mesh.toml"
    agent = '[agents.a]\nkind = "code"\ndescription = "d"\naddress = "127.0.0.1:0"\n'
    config.write_text(f"[mesh]\ndata_limit_mb = 7\n{agent}")
    assert load_config(config).data_limit_mb == 7
    monkeypatch.setenv("MESH_DATA_LIMIT_MB", "3")
    assert load_config(config).data_limit_mb == 3
    monkeypatch.setenv("MESH_DATA_LIMIT_MB", "lots")
    with pytest.raises(ConfigError, match="MESH_DATA_LIMIT_MB: expected a whole number"):
        load_config(config)
    monkeypatch.delenv("MESH_DATA_LIMIT_MB")
    config.write_text(f"[mesh]\ndata_limit_mb = 0\n{agent}")
    with pytest.raises(ConfigError, match=r"mesh\.data_limit_mb: must be at least 1"):
        load_config(config)
    config.write_text(agent)
    assert load_config(config).data_limit_mb == DEFAULT_DATA_LIMIT_MB


def test_files_of_stopped_processes_count_in_the_budget(tmp_path: Path) -> None:
    """A restart does not add a budget: what earlier processes of the service left is
    deleted, oldest first, until it fits beside the new process's own files; a file that
    a running process writes, and files of other services, are never touched."""
    running = RotatingFile(tmp_path / "svc-7.jsonl", max_bytes=1000, backups=1, family="svc")
    running.append(["r" * 900 + "\n"])
    stopped = [tmp_path / name for name in ("svc-1.jsonl.1", "svc-1.jsonl", "svc-2.jsonl.1",
                                            "svc-2.jsonl", "svc-3.jsonl")]  # fmt: skip
    for age, path in enumerate(reversed(stopped)):
        path.write_text("s" * 399 + "\n")
        os.utime(path, (time.time() - 100 - age, time.time() - 100 - age))
    other = tmp_path / "other-1.jsonl"
    other.write_text("o" * 5000 + "\n")

    log = RotatingFile(tmp_path / "svc-8.jsonl", max_bytes=1000, backups=1, family="svc")
    # 2000 of budget: 1000 for its live file (counted full), 1000 for what was left (2 files)
    assert [p.exists() for p in stopped] == [False, False, False, True, True]
    assert running.path.exists() and other.exists()
    for _ in range(3):
        log.append(["n" * 600 + "\n"])  # rotates: its backup takes what the leftovers held
    assert not any(p.exists() for p in stopped)
    assert running.path.read_text() == "r" * 900 + "\n" and other.exists()
    assert data_bytes(tmp_path) - running.path.stat().st_size - 5001 <= log.budget
    running.close()
    log.close()


def test_a_line_longer_than_a_file_is_never_written(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "a.jsonl", max_bytes=1000, backups=1)
    log.append(["x" * 2000 + "\n", '{"ok": 1}\n'])
    assert (tmp_path / "a.jsonl").read_text() == '{"ok": 1}\n' and log.dropped == 1


def test_the_memo_refuses_writes_past_its_cap_and_forgets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memo_module, "MAX_MEMO_BYTES", 256 * 1024)
    memo = MemoTool(tmp_path / "memo.sqlite3")
    stored = 0
    with pytest.raises(ToolExecutionError, match="memo is full"):
        for n in range(100):
            memo.set(f"k{n}", "v" * 60_000)
            stored += 1
    assert 3 <= stored < 10 and memo.get("k0") == "v" * 60_000
    memo.delete("k0")
    memo.set("again", 1)  # room again once keys are deleted
    assert data_bytes(tmp_path) < 2 * 1024 * 1024


# Readers: files far larger than what a reader may hold, and an absurd line in the middle.


def trace_id(trace: int) -> str:
    return hashlib.sha256(str(trace).encode()).hexdigest()[:32]


def span(trace: int, n: int, start: int, parent: int | None = None) -> str:
    record = {"trace_id": trace_id(trace), "span_id": f"{trace:08x}{n:08x}",
              "parent_id": "" if parent is None else f"{trace:08x}{parent:08x}",
              "name": f"span {n}", "service": f"svc{trace % 3}", "start_ns": start,
              "end_ns": start + 1000 + n, "error": None,
              "attributes": {"pad": "p" * 200}}  # fmt: skip
    return json.dumps(record) + "\n"


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000 traces of 5 spans in two services' files (children written before parents, as a
    batch exporter does), and a 24 MB line with no newline in the middle of one."""
    directory = tmp_path_factory.mktemp("traces")
    files = [(directory / f"svc-{n}.jsonl").open("w") for n in (1, 2)]
    for trace in range(1, 4001):
        start = 10**18 + trace * 10**6
        lines = [span(trace, n, start + n, parent=n - 1 if n else None) for n in range(5)]
        for n, line in enumerate(reversed(lines)):
            files[n % 2].write(line)
        if trace == 2000:
            files[0].write("x" * ABSURD_LINE_BYTES)
            files[0].write("\n")
    for file in files:
        file.close()
    return directory


def peak_bytes(work: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_mesh_trace_lists_recent_traces_in_bounded_memory(
    trace_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    total = data_bytes(trace_dir)
    code, peak = peak_bytes(lambda: mesh_main(["trace", "--dir", str(trace_dir)]))
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [trace_id(t) for t in range(4000, 3980, -1)]
    assert lines[0].split("ms  ")[1] == f"span 0 [svc{4000 % 3}]"  # the root, its service
    assert peak < 8 * 2**20 and total > 30 * 2**20, (peak, total)


def test_mesh_trace_draws_one_trace_in_bounded_memory(
    trace_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = trace_id(1234)[:12]
    code, peak = peak_bytes(lambda: mesh_main(["trace", wanted, "--dir", str(trace_dir)]))
    assert code == 0
    tree = capsys.readouterr().out.splitlines()
    nested = ["  " * n + f"span {n}" for n in range(5)]  # though written children first
    assert [line.split(" [")[0] for line in tree] == nested  # and half in another file
    assert peak < 8 * 2**20, peak


def test_the_listing_is_exact_when_it_forgets_old_traces() -> None:
    """Keeping only a few summaries at a time (so that it forgets, and meets spans of traces
    it forgot) gives the listing that keeping everything gives."""
    rng = random.Random(7)
    spans = []
    for trace in range(300):
        start = rng.randrange(10**12)
        for n in range(rng.randint(1, 6)):  # long traces: late spans of early traces
            begins = start + (0 if n == 0 else rng.randrange(10**11))
            spans.append(SpanRecord(f"{trace:032x}", f"{n:016x}", "" if n == 0 else "0" * 16,
                                    f"s{n}", "svc", begins, begins + 10, None))  # fmt: skip
    rng.shuffle(spans)
    everything = list_traces(lambda: iter(spans), limit=15, keep=10**6)
    assert list_traces(lambda: iter(spans), limit=15, keep=1) == everything
    assert list_traces(lambda: iter(spans), limit=300, keep=20) == list_traces(
        lambda: iter(spans), limit=300, keep=10**6
    )


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A delegation tree (root -> child -> grandchild) whose runs sit in files in the wrong
    order for one pass, among 12,000 entries of other runs, and a 24 MB line."""
    directory = tmp_path_factory.mktemp("audit")

    def entry(ts: float, run: str, parent: str | None) -> str:
        ids = {"run_id": run, "parent_run_id": parent}
        return json.dumps({"ts": ts, "event": "ModelOutput", **ids, "output": "o" * 150}) + "\n"

    tree = [("c-grandchild", "b-child"), ("b-child", "a-root"), ("a-root", None)]
    for n, (run, parent) in enumerate(tree):  # grandchild first: found only in a later pass
        with (directory / f"{n}-svc-{n}.jsonl").open("w") as file:
            for i in range(4000):
                file.write(entry(float(i), f"other-{n}-{i}", f"other-{n}-{i - 1}"))
                if i in (10, 3000):
                    file.write(entry(1e9 + n * 10 + i / 10_000, run, parent))
            if n == 1:
                file.write("y" * ABSURD_LINE_BYTES)  # no newline: the file's torn end
    return directory


def test_mesh_audit_follows_delegations_in_bounded_memory(
    audit_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, peak = peak_bytes(lambda: mesh_main(["audit", "a-root", "--dir", str(audit_dir)]))
    assert code == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    in_time_order = ["c-grandchild"] * 2 + ["b-child"] * 2 + ["a-root"] * 2  # as written here
    assert [e["run_id"] for e in entries] == in_time_order
    assert [e["ts"] for e in entries] == sorted(e["ts"] for e in entries)
    assert peak < 8 * 2**20 and data_bytes(audit_dir) > 24 * 2**20, peak
