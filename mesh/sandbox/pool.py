"""``JailPool``: jails started ahead of time, so a run never waits for one.

A run takes a fresh, never-used jail; a background thread starts its
replacement. Pools are shared per ``SandboxConfig`` within a process, and
the first jail a pool starts doubles as the start-up check: if it cannot
start, the sandbox is unavailable and the error says why.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque

from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.jail import Jail, JailDied
from mesh.sandbox.nsjail import SandboxUnavailableError, check_python_visible, jail_command

__all__ = ["JailPool", "pool_for"]

READY_TIMEOUT_S = 10.0
REFILL_THREADS = 2  # jails start mostly on the CPU of their own process: overlap two


class JailPool:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.argv = jail_command(config)
        self._ready: deque[Jail] = deque()
        self._lock = threading.Lock()
        self._refilling = 0  # threads starting jails right now
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start_jail(self) -> Jail:
        jail = Jail(self.argv, cpu_limit_s=self.config.cpu_seconds)
        try:
            jail.wait_ready(READY_TIMEOUT_S)
        except (JailDied, TimeoutError) as err:
            jail.kill()
            reason = err.reason if isinstance(err, JailDied) else "it did not start in time"
            raise SandboxUnavailableError(
                f"the nsjail sandbox could not start: {reason}. nsjail needs root or "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0) and, in a container, the right to create "
                "namespaces (e.g. no seccomp/AppArmor profile that blocks unshare)."
            ) from err
        return jail

    def take(self) -> Jail:
        """A fresh jail: a pre-started one when available, else one started now."""
        with self._lock:
            while self._ready:
                jail = self._ready.popleft()
                if jail.alive:
                    break
                jail.kill()
            else:
                jail = None
        self._refill_in_background()
        return jail if jail is not None else self.start_jail()

    def prime(self) -> None:
        """Start one jail now (raising if the sandbox cannot work), then fill the pool."""
        jail = self.start_jail()
        with self._lock:
            self._ready.append(jail)
        self._refill_in_background()

    def _refill_in_background(self) -> None:
        with self._lock:
            wanted = self.config.pool_size - len(self._ready) - self._refilling
            start = max(0, min(wanted, REFILL_THREADS - self._refilling))
            if self._closed or not start:
                return
            self._refilling += start
        for _ in range(start):
            thread = threading.Thread(target=self._refill, name="jail-pool", daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _refill(self) -> None:
        try:
            while True:
                with self._lock:
                    # Stop once the jails ready plus those other threads are starting suffice.
                    if self._closed or len(self._ready) + self._refilling > self.config.pool_size:
                        return
                try:
                    jail = self.start_jail()
                except SandboxUnavailableError:
                    return  # the next take() starts one itself and reports the error
                with self._lock:
                    if self._closed:
                        jail.kill()
                        return
                    self._ready.append(jail)
        finally:
            with self._lock:
                self._refilling -= 1

    def close(self) -> None:
        """Kill the ready jails, and those being started (waiting for them to be)."""
        with self._lock:
            self._closed = True
            jails = list(self._ready)
            self._ready.clear()
            threads = list(self._threads)
        for jail in jails:
            jail.kill()
        for thread in threads:
            thread.join(timeout=READY_TIMEOUT_S)


_pools: dict[SandboxConfig, JailPool] = {}
_pools_lock = threading.Lock()


def pool_for(config: SandboxConfig) -> JailPool:
    """The process-wide pool for ``config``, checked and warmed on first use."""
    with _pools_lock:
        pool = _pools.get(config)
        if pool is None:
            check_python_visible(config.python)
            pool = JailPool(config)
            pool.prime()
            _pools[config] = pool
    return pool


@atexit.register
def _close_pools() -> None:
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
