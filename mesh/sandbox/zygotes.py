"""``Zygote``: the host's handle on one pre-jailed interpreter that forks runs.

One zygote per sandbox configuration and preloaded imports, shared within
a process: it enters the jail and imports what runs need once (about 90 ms
here, bench/sandbox.py) and then gives each run a fresh process of its own in
about a millisecond (zygote.py, isolation.py). A zygote that dies (killed,
crashed) fails the runs it carried, and the next run starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.jail import Jail, JailDied, death_reason, signal_name
from mesh.sandbox.nsjail import (
    SandboxUnavailableError,
    check_python_visible,
    nsjail_errors,
    zygote_command,
)

__all__ = ["Zygote", "zygote_for"]

READY_TIMEOUT_S = 10.0
EXIT_NEWS_TIMEOUT_S = 2.0
MAX_MESSAGE = 4096
STDLIB = frozenset(sys.stdlib_module_names)


class Zygote:
    def __init__(self, config: SandboxConfig, preload: Iterable[str] = ()) -> None:
        self.config = config
        self._control, jail_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the zygote
        argv = zygote_command(config, jail_end.fileno(), sorted(preload))
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                pass_fds=(jail_end.fileno(),),
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin"},  # nothing of the host's environment, no secrets
            )
        finally:
            jail_end.close()
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._children: dict[int, ZygoteChild] = {}  # runs not known to have ended
        self._spare: Jail | None = None
        self.ids = itertools.count(1)
        self._ready = threading.Event()
        self.dead = False
        threading.Thread(target=self._listen, name="zygote", daemon=True).start()
        if not self._ready.wait(READY_TIMEOUT_S) or self.dead:
            self.close()
            raise SandboxUnavailableError(
                f"the nsjail sandbox could not start: {self.failure()}. nsjail needs root or "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0) and, in a container, the right to create "
                "namespaces (e.g. no seccomp/AppArmor profile that blocks unshare)."
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def spawn(self) -> Jail:
        """A fresh interpreter in walls of its own, never used by another run.

        The spare the zygote forked while idle when there is one (its first
        snippet then waits for no fork), else one forked now; with either, in
        the same message, the zygote is asked for the next spare, which it
        forks once it is idle again. The jail is sent work at once: its first
        message, "ready", comes before its answer.
        """
        with self._lock:
            jail, self._spare = self._spare, None
        spare = _Order(self)
        if jail is not None and jail.alive:
            claim = {"op": "claim", "id": _run_id(jail), "spare": spare.run_id}
            self._send(claim, spare.ends, spare)
        else:
            if jail is not None:
                jail.kill()
            fresh = _Order(self)
            spawn = {"op": "spawn", "id": fresh.run_id, "spare": spare.run_id}
            self._send(spawn, fresh.ends + spare.ends, fresh, spare)
            jail = fresh.jail()
        with self._lock:
            self._spare, unused = spare.jail(), self._spare  # another thread may have ordered one
        if unused is not None:
            unused.kill()
        return jail

    def kill(self, run_id: int) -> None:
        with contextlib.suppress(JailDied):
            self._send({"op": "kill", "id": run_id})

    def close(self) -> None:
        """End the zygote and with it every run it carries."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        try:
            self.process.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait()

    def _send(self, message: dict[str, Any], fds: Sequence[int] = (), *orders: _Order) -> None:
        """Send ``message`` (with ``fds``, which are then closed here; so are the host's ends
        of ``orders`` when it cannot be sent)."""
        data = json.dumps(message).encode()
        try:
            # Not under _lock: a send may wait for the zygote, which may wait for _listen.
            with self._sending:
                if self.dead:
                    raise OSError("the zygote is gone")
                socket.send_fds(self._control, [data], fds)
        except OSError as err:
            for order in orders:
                order.cancel()
            raise JailDied(f"the sandbox's zygote is gone ({self.failure()})") from err
        finally:
            for fd in fds:
                os.close(fd)

    def track(self, child: ZygoteChild) -> None:
        with self._lock:
            self._children[child.run_id] = child

    def _listen(self) -> None:
        """Take the zygote's news until it ends; then every run it carried is gone."""
        while True:
            try:
                data = self._control.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            if message.get("op") == "ready":
                self._ready.set()
            elif message.get("op") == "exited":
                with self._lock:
                    child = self._children.pop(int(message["id"]), None)
                if child is not None:
                    child.ended(message)
        with self._lock:
            self.dead = True
            orphans, self._children = list(self._children.values()), {}
        for child in orphans:
            child.ended(None)
        self._ready.set()
        self.process.wait()
        self._control.close()

    def failure(self) -> str:
        """How the zygote failed, and what nsjail (or the zygote) said about it."""
        code = self.process.poll()
        name = signal_name(code)
        if code is None:
            how = "it did not answer in time"
        elif name is not None:
            how = f"nsjail was ended by signal {name}"
        else:
            how = f"nsjail exited with code {code}"
        said = self.said()
        return f"{how}: {said}" if said else how

    def said(self) -> str:
        """The errors on nsjail's log, which the zygote's stderr shares (``nsjail_errors``)."""
        try:
            self._log.seek(0)
            log = self._log.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            log = ""
        return nsjail_errors(log)


class _Order:
    """The pipes of an interpreter the zygote is asked for, before it is sent."""

    def __init__(self, zygote: Zygote) -> None:
        to_child, self.to_jail = os.pipe()
        self.from_jail, from_child = os.pipe()
        self.ends = [to_child, from_child]
        self.child = ZygoteChild(zygote, next(zygote.ids))
        zygote.track(self.child)

    @property
    def run_id(self) -> int:
        return self.child.run_id

    def jail(self) -> Jail:
        return Jail(self.to_jail, self.from_jail, self.child)

    def cancel(self) -> None:
        os.close(self.to_jail)
        os.close(self.from_jail)


def _run_id(jail: Jail) -> int:
    assert isinstance(jail.ending, ZygoteChild)
    return jail.ending.run_id


class ZygoteChild:
    """The ``Ending`` of a run's interpreter: the zygote kills it and tells how it ended."""

    def __init__(self, zygote: Zygote, run_id: int) -> None:
        self.zygote = zygote
        self.run_id = run_id
        self._news: dict[str, Any] | None = None
        self._ended = threading.Event()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def ended(self, news: dict[str, Any] | None) -> None:
        """News from the zygote that the run ended (None: the zygote itself did)."""
        self._news = news
        self._ended.set()

    def kill(self) -> None:
        if not self._ended.is_set():
            self.zygote.kill(self.run_id)

    def death_reason(self) -> str:
        news = self._news if self._ended.wait(EXIT_NEWS_TIMEOUT_S) else None
        if news is None:
            return f"the sandbox's zygote is gone ({self.zygote.failure()})"
        if news.get("refused"):
            return f"the zygote could not fork it ({self.zygote.failure()})"
        if news.get("lifetime"):
            return f"it reached the end of its lifetime ({self.zygote.config.lifetime_seconds} s)"
        code, cpu_s = int(news.get("code", 0)), float(news.get("cpu", 0.0))
        return death_reason(code, cpu_s, self.zygote.config.cpu_seconds)


_zygotes: dict[tuple[SandboxConfig, frozenset[str]], Zygote] = {}
_zygotes_lock = threading.Lock()


def zygote_for(config: SandboxConfig, imports: Iterable[str] = ()) -> Zygote:
    """The process-wide zygote for ``config``, started (and checked) on first use, and
    started again if it died. It preloads the standard-library modules ``imports`` name:
    third-party ones may start threads at import, and a zygote must not have any."""
    preload = frozenset(name for name in imports if name.split(".")[0] in STDLIB)
    key = (config, preload)
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None or zygote.dead:
            check_python_visible(config.python)
            zygote = Zygote(config, preload)
            try:
                probe = zygote.spawn()  # the start-up check: a run can be isolated here
                probe.wait_ready(READY_TIMEOUT_S)
                probe.kill()
            except (JailDied, TimeoutError) as err:
                zygote.close()
                reason = err.reason if isinstance(err, JailDied) else "it did not start in time"
                said = zygote.said()  # e.g. the zygote's word on the walls it could not raise
                if said and said not in reason:
                    reason += f"; the jail said: {said}"
                raise SandboxUnavailableError(
                    f"the sandbox cannot isolate a run: {reason}. It needs nested user "
                    "namespaces (user.max_user_namespaces well above 1)."
                ) from err
            _zygotes[key] = zygote
    return zygote


@atexit.register
def _close_zygotes() -> None:
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()
