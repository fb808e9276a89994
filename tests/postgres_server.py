"""A real PostgreSQL server that a test (or a bench) starts, kills and restarts itself.

Debian's ``postgresql`` package (``make test`` installs it where it is missing)
gives the server binaries; each ``PostgresServer`` has its own data directory
in a fresh temporary folder and listens on a free loopback port, so tests own
their world. PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` user the package creates, switched to by ``setpriv`` rather than
``Popen(user=...)``: that makes Popen fork without vfork, and a fork while the
test's gRPC channels are busy runs gRPC's fork handlers in the child, which
then crashes (a restart mid-traffic did).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "postgres_bin_dir"]

START_TIMEOUT_S = 30.0


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``$MESH_PG_BIN``, else Debian's newest
    ``/usr/lib/postgresql/N/bin``, else the ``PATH``."""
    if configured := os.environ.get("MESH_PG_BIN"):
        return Path(configured)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                    key=lambda p: int(Path(p).parent.parent.name))  # fmt: skip
    if debian:
        return Path(debian[-1]).parent
    if found := shutil.which("initdb"):
        return Path(found).parent
    raise RuntimeError("no PostgreSQL server here: install Debian's postgresql package "
                       "(make test does, as root) or set MESH_PG_BIN")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server: ``start``, ``kill`` (SIGKILL, as a crash), ``start`` again on
    the same data and port, ``stop``."""

    def __init__(self, also_listen: str = "", trusted_network: str = "") -> None:
        """``also_listen``: one more address to listen on (e.g. a container network's gateway),
        from which clients in ``trusted_network`` (CIDR) connect without a password."""
        self.bin = postgres_bin_dir()
        self.listen = ",".join(filter(None, ["127.0.0.1", also_listen]))
        self.root = Path(tempfile.mkdtemp(prefix="mesh-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(self.bin / "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres",
                  "--no-instructions", "-E", "UTF8")  # fmt: skip
        if trusted_network:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {trusted_network} trust\n")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server's to write)
        self.process = subprocess.Popen(
            [*self._as_user, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", f"listen_addresses={self.listen}", "-c", f"unix_socket_directories={self.root}",
             "-c", "max_connections=300", "-c", "shared_buffers=32MB",
             "-c", "log_min_messages=warning"],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')  # a name of the test's, not a caller's
        return self.dsn(name)

    def kill(self) -> None:
        """SIGKILL the server and its backends, as a crash of its machine's processes would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            _wait_for_group_to_die(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def _as_user(self) -> list[str]:
        if self._user is None:
            return []
        return ["setpriv", f"--reuid={self._user}", f"--regid={self._user}", "--init-groups"]

    def _run(self, *argv: object) -> None:
        done = subprocess.run([*self._as_user, *(str(a) for a in argv)], capture_output=True)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")


def _wait_for_group_to_die(group: int) -> None:
    """A killed postmaster's backends die with it (one process group); the next start
    needs the port and shared memory they held."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
