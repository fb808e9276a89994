"""Test-wide guards: no network beyond loopback, no API keys, no real model.

A test that tries to reach anything but loopback fails loudly, so a real
model call (or a real web search) can never slip into the suite.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image_build import start_image_build, stop_image_build
from tests.installed import installed, wheel  # noqa: F401  (smolmesh installed from a wheel)
from tests.mesh_setup import mesh_dir  # noqa: F401  (a session fixture shared by mesh tests)
from tests.otlp_receiver import Receiver, serve_receiver
from tests.postgres_server import PostgresServer
from tests.runs_setup import (  # noqa: F401  (shared: slow runs)
    runs_model,
    runs_service,
    shared_runs_service,
)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise OSError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise OSError(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _is_local((host.decode() if isinstance(host, bytes) else host,)):
        raise socket.gaierror(f"test tried to resolve {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def no_network() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo


SUITE_MARK = f"MESH_TEST_SUITE={uuid.uuid4().hex}"
"""In the environment of everything this suite starts (inherited by services, their jails'
nsjail and any orphan), so that the leftover check counts only this suite's processes:
other meshes on the machine are not ours to judge."""
os.environ["MESH_TEST_SUITE"] = SUITE_MARK.split("=", 1)[1]


def _started_by_this_suite(pid: int) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return SUITE_MARK.encode() in environ.split(b"\0")


def _mesh_processes() -> set[tuple[int, str]]:
    """Live mesh services and jails this suite started, (pid, command line), but for the warm
    pools of this process's own in-process agents (closed when it exits)."""
    out = subprocess.run(["ps", "-ww", "-e", "-o", "pid=,ppid=,stat=,args="], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    found = set()
    for line in out.splitlines():
        pid, ppid, stat, args = line.split(None, 3)
        jail = "nsjail" in args.split()[0]
        if stat.startswith("Z") or (jail and int(ppid) == os.getpid()):
            continue
        if (jail or " mesh serve " in args) and _started_by_this_suite(int(pid)):
            found.add((int(pid), args[:200]))
    return found


@pytest.fixture(autouse=True, scope="session")
def nothing_left_running() -> Iterator[None]:
    """After the whole suite, every service and jail a test started has gone."""
    before = _mesh_processes()
    yield
    deadline = time.monotonic() + 15
    while (left := _mesh_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"left running after the tests: {sorted(left)}"


@pytest.fixture(autouse=True, scope="session")
def private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing a test starts writes to the user's data directory.

    Session-wide, so that services started by module-scoped fixtures (set up
    before any function-scoped fixture runs) are covered too.
    """
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if saved is None:
        del os.environ["XDG_DATA_HOME"]
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture(autouse=True)
def no_api_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in list(os.environ):
        if name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.delenv("MESH_STATE_DSN", raising=False)  # embedded SQLite unless a test says
    monkeypatch.setenv("MESH_MEMO_PATH", str(tmp_path / "memo.sqlite3"))
    monkeypatch.setenv("MESH_TRACE_DIR", str(tmp_path / "traces"))
    monkeypatch.setenv("MESH_AUDIT_DIR", str(tmp_path / "audit"))
    monkeypatch.setenv("MESH_TOOL_LOG_DIR", str(tmp_path / "tool-changes"))
    monkeypatch.setenv("MESH_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MESH_SESSIONS_DIR", str(tmp_path / "sessions"))
    warnings.filterwarnings("ignore", message="UnsafeLocalExecutor", category=RuntimeWarning)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the suite (tests that kill a server start their own)."""
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def state_dsn(postgres: PostgresServer) -> str:
    """A fresh, empty database of the suite's server, for one test."""
    return postgres.create_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    """A real OTLP/gRPC receiver on loopback, and its port."""
    collector, server, port = serve_receiver()
    yield collector, port
    server.stop(0)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The container tests' image starts building now, beside the other tests."""
    if any(item.nodeid.startswith("tests/test_containers.py") for item in session.items):
        start_image_build()


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_image_build()  # a build the container tests did not get to (e.g. -x stopped first)
