"""Nothing a caller does puts a traceback in a server's log.

Deadlines that expire at every moment of a run, clients that cancel or hang
up mid-stream, Cancel, and Ctrl-C of ``mesh up`` with runs in flight are all
things callers and operators do: the terminal of ``mesh up`` (where every
service writes its log) must stay free of tracebacks, "Task exception was
never retrieved", "Failed to detach context" and ERROR lines. A real bug
still logs its traceback, with the reference id its caller was given.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.rpc.status import translate_errors
from tests.mesh_setup import SEED_TASK, SLOW_TASK
from tests.support import alive, descendants, wait_until

NOISE = ("Traceback", "Task exception was never retrieved", "Failed to detach context",
         "Exception ignored", "ended span", "due to server stop")  # fmt: skip
"""What a caller must never cause in a server's log (besides ERROR lines)."""

SEED_DEADLINES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Spread over a seed run (a few hundred ms on replay): before it starts, in each agent."""
SLOW_DEADLINES = (0.3, 1.5)
"""While the manager waits on the slow specialist, whose jailed code spins."""


class MeshUp:
    """``mesh up`` in its own process; everything its services log, as its terminal shows it."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mesh", "up", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stderr is not None
        self.lines: list[str] = []
        stderr = self.process.stderr
        self._reader = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self._reader.start()
        self.process.stdout.readline()  # the table's header
        rows = [self.process.stdout.readline().split() for _ in range(4)]
        self.addresses = {row[0]: row[2] for row in rows}
        self.services = descendants(self.process.pid)

    def stub(self, agent: str = "manager") -> Any:
        channel = grpc.insecure_channel(self.addresses[agent])
        return agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]

    def wait(self) -> int:
        """Its exit status, once it and its services are gone."""
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        wait_until(lambda: not alive(self.services))
        return code

    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def mesh_up(mesh_dir: Path, tmp_path: Path) -> Iterator[MeshUp]:
    """The test mesh, but its slow specialist takes several runs at once: a run of it that
    was cancelled a moment ago may still hold a slot, and a refused delegation is not what
    this test is about."""
    for cassette in mesh_dir.glob("*.jsonl"):
        shutil.copy(cassette, tmp_path)
    config = (mesh_dir / "mesh.toml").read_text()
    assert "max_concurrent_runs = 1\n" in config
    config = config.replace("max_concurrent_runs = 1\n", "max_concurrent_runs = 8\n")
    (tmp_path / "mesh.toml").write_text(config)
    up = MeshUp(tmp_path / "mesh.toml")
    yield up
    if up.process.poll() is None:
        up.process.kill()
        up.process.wait()


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.StatusCode:
    """The status a call ended with (``list`` and a stream: that of the whole stream)."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def read(call: Any, messages: int) -> None:
    """Read the first ``messages`` of a stream (fewer if it ends first)."""
    for _ in zip(range(messages), call, strict=False):
        pass


def test_deadlines_cancels_hang_ups_and_ctrl_c_leave_no_tracebacks(mesh_up: MeshUp) -> None:
    manager = mesh_up.stub()
    reply = manager.Run(pb.RunRequest(task=SEED_TASK), timeout=60)
    assert reply.answer_text.startswith("gRPC was open-sourced in 2015")

    ended = {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    for deadline in SEED_DEADLINES:
        stream = manager.RunStream(pb.RunStreamRequest(task=SEED_TASK), timeout=deadline)
        assert outcome(list, stream) in ended
        assert outcome(manager.Run, pb.RunRequest(task=SEED_TASK), timeout=deadline) in ended
    for deadline in SLOW_DEADLINES:
        stream = manager.RunStream(pb.RunStreamRequest(task=SLOW_TASK), timeout=deadline)
        assert outcome(list, stream) == grpc.StatusCode.DEADLINE_EXCEEDED

    for messages in range(1, 7):  # the client cancels after each of the stream's first messages
        stream = manager.RunStream(pb.RunStreamRequest(task=SEED_TASK), timeout=30)
        read(stream, messages)
        stream.cancel()
    _cancel_mid_delegation(manager)
    for moment, messages in enumerate((0, 1, 3)):  # Cancel, as the run starts and during it
        run_id = f"quiet-cancel-{moment}"
        stream = manager.RunStream(pb.RunStreamRequest(task=SEED_TASK, run_id=run_id), timeout=30)
        read(stream, messages)
        cancel = outcome(manager.Cancel, pb.CancelRequest(run_id=run_id), timeout=5)
        assert cancel in {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}  # it may be over
        assert outcome(list, stream) in {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}
    for task in (SLOW_TASK, SEED_TASK):  # the client's channel closes mid-run
        channel = grpc.insecure_channel(mesh_up.addresses["manager"])
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.RunStream(pb.RunStreamRequest(task=task), timeout=30)
        if task == SLOW_TASK:
            _wait_for_delegation(stream)
        else:
            read(stream, 3)
        channel.close()

    # Ctrl-C with runs in flight: one finishes as the mesh drains; the client of the other,
    # which the slow specialist spins for, gives up while the manager waits for it.
    waiting = manager.RunStream(pb.RunStreamRequest(task=SLOW_TASK), timeout=60)
    _wait_for_delegation(waiting)
    finishing = manager.RunStream(pb.RunStreamRequest(task=SEED_TASK), timeout=30)
    read(finishing, 1)
    mesh_up.process.send_signal(signal.SIGINT)
    wait_until(lambda: "manager: stopping" in mesh_up.log())
    waiting.cancel()
    assert mesh_up.wait() == 0

    log = mesh_up.log()
    assert "Stopping the mesh" in log
    found = [noise for noise in NOISE if noise in log]
    errors = [line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    assert not found and not errors, log
    # The manager drained before the specialists stopped: its run could still delegate.
    assert outcome(list, finishing) == grpc.StatusCode.OK


def _cancel_mid_delegation(manager: Any) -> None:
    """The client cancels while the slow specialist's jailed code spins for the manager."""
    stream = manager.RunStream(pb.RunStreamRequest(task=SLOW_TASK), timeout=30)
    _wait_for_delegation(stream)
    stream.cancel()


def _wait_for_delegation(stream: Any) -> None:
    """Read ``stream`` until the run it delegated has started."""
    events = (event for response in stream for event in response.events)
    next(e for e in events if e.WhichOneof("kind") == "run_started" and e.depth == 1)


class Flaky:
    """A servicer whose stream floods its client (so that a cancel meets it writing), or sends
    one item and then meets a bug."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.tasks: list[asyncio.Task[Any] | None] = []

    @translate_errors
    async def RunStream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.tasks.append(asyncio.current_task())
        try:
            yield b"first"
            if request == b"bug":
                raise ValueError("a real bug")
            while True:
                yield b"x" * 1_000_000
        finally:
            self.tasks.append(asyncio.current_task())
            self.closed.set()


def test_a_real_bug_is_logged_with_its_reference_and_a_hang_up_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[str, grpc.StatusCode | None]:
        flaky = Flaky()
        method: Any = grpc.unary_stream_rpc_method_handler(flaky.RunStream)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Flaky", {"RunStream": method}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream: Any = channel.unary_stream("/test.Flaky/RunStream")
                call = stream(b"flood", timeout=30)
                assert await call.read() == b"first"
                call.cancel()  # while the server waits to write (the client reads no more)
                await asyncio.wait_for(flaky.closed.wait(), 10)
                gc.collect()
                await asyncio.sleep(0.1)  # for an abandoned generator's aclose() task to log
                hang_up = caplog.text
                code, details, detail = None, "", pb.ErrorDetail()
                try:
                    async for _ in stream(b"bug", timeout=30):
                        pass
                except grpc.aio.AioRpcError as err:
                    code, details = err.code(), err.details() or ""
                    detail = _detail(err)
        finally:
            await server.stop(None)
        assert not hang_up, hang_up
        first, last = flaky.tasks[:2]
        assert first is last, "the stream was closed outside its call's task"
        return details, code, detail

    with caplog.at_level(logging.INFO):
        details, code, detail = asyncio.run(scenario())
    assert code == grpc.StatusCode.INTERNAL
    reference = details.split("ref ", 1)[1].split(";", 1)[0]
    assert (detail.reason, dict(detail.metadata)) == ("internal", {"reference": reference})
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == f"internal error (ref {reference})"
    assert record.exc_info is not None and "a real bug" in str(record.exc_info[1])
    assert "ValueError: a real bug" in caplog.text  # the traceback, in the server's log only
    assert "a real bug" not in details


def _detail(err: grpc.aio.AioRpcError) -> pb.ErrorDetail:
    """The ErrorDetail a client in any language reads from the call's rich status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    detail = pb.ErrorDetail()
    assert status is not None and status.details[0].Unpack(detail)
    return detail
