"""Starting a whole mesh on one machine: one process per agent (per replica).

Agents start in dependency order (specialists before their manager), each
with ``mesh serve``; a port of 0 is resolved by the child, which reports the
port it bound, and the addresses of an agent's managed agents reach it
through ``MESH_ADDRESS_<NAME>``. Stopping sends SIGTERM (the servers drain
and kill their jails) in the reverse order, callers before the agents they
call, so that a manager's runs in flight can still delegate while they
drain; SIGKILL goes to anything still there after the grace.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mesh.config import MeshConfig
from mesh.errors import AgentUnavailableError
from mesh.rpc.client import AgentClient
from mesh.rpc.security import MeshSecurity

__all__ = ["MeshProcesses", "ServiceProcess", "wait_healthy"]

READY_PREFIX = "SERVING "


@dataclass
class ServiceProcess:
    agent: str
    address: str
    process: subprocess.Popen[str]


@dataclass
class MeshProcesses:
    """``with MeshProcesses(config) as mesh: mesh.addresses["manager"]``"""

    config: MeshConfig
    log_dir: Path | None = None
    start_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    """Start just these agents (the others are expected elsewhere, or down)."""
    serve_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """More arguments for an agent's ``mesh serve`` (``--record PATH``)."""
    services: list[ServiceProcess] = field(default_factory=list)

    @property
    def addresses(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for service in self.services:
            out.setdefault(service.agent, []).append(service.address)
        return out

    def start(self) -> MeshProcesses:
        try:
            for name in self.config.dependency_order():
                if self.only and name not in self.only:
                    continue
                for address in self.config.agent(name).addresses:
                    self.services.append(self._spawn(name, address))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop every service in waves: those no running service calls, then the agents they
        called. ``grace_s`` bounds the whole; it exceeds a server's own grace (10 s, after
        which it cancels its runs and exits) so that a server is killed only if it hangs."""
        deadline = time.monotonic() + grace_s
        left = list(self.services)
        while left:
            called = {name for s in left for name in self.config.agent(s.agent).depends_on()}
            wave = [s for s in left if s.agent not in called] or left
            for service in wave:
                if service.process.poll() is None:
                    service.process.send_signal(signal.SIGTERM)
            for service in wave:
                try:
                    service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    service.process.kill()
                    service.process.wait()
            left = [s for s in left if s not in wave]
        self.services.clear()

    def restart(self, index: int) -> ServiceProcess:
        """Start service ``index`` again at the address it had (its callers know it by that).
        Raises ``AgentUnavailableError`` if it does not come up; the dead one stays listed."""
        dead = self.services[index]
        self.services[index] = self._spawn(dead.agent, dead.address)
        return self.services[index]

    def __enter__(self) -> MeshProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, address: str) -> ServiceProcess:
        env = {**os.environ, **self.env}
        for child, child_addresses in self.addresses.items():
            env[f"MESH_ADDRESS_{child.upper()}"] = ",".join(child_addresses)
        stderr: IO[str] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stderr = open(self.log_dir / f"{name}-{len(self.services)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "mesh", "serve", name, "--config", str(self.config.path),
             "--address", address, *self.serve_args.get(name, ())],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        if stderr is not None:
            stderr.close()
        port = _read_port(process, name, self.start_timeout_s)
        host = address.rsplit(":", 1)[0]
        service = ServiceProcess(name, f"{host}:{port}", process)
        wait_healthy(service.address, self.start_timeout_s, self.config.security)
        return service


def _read_port(process: subprocess.Popen[str], name: str, timeout_s: float) -> int:
    """The port the child reports once it serves (it prints ``SERVING <name> <port>``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            raise AgentUnavailableError(
                f"{name} exited during start-up (code {process.wait()}); see its log"
            )
        if line.startswith(READY_PREFIX):
            return int(line.split()[-1])
    process.kill()
    raise AgentUnavailableError(f"{name} did not start within {timeout_s:g} s")


def wait_healthy(
    address: str, timeout_s: float = 30.0, security: MeshSecurity | None = None
) -> None:
    """Block until ``address`` reports SERVING on grpc.health.v1."""
    with AgentClient(address, security=security) as client:
        client.wait_healthy(timeout_s)
