"""``Jail``: one running nsjail process with the runner inside.

It owns the process and its pipes, speaks the frame protocol, and when the
process is gone it can say why (exit code, signal, CPU used, nsjail's own
log), which becomes the observation the model reads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from mesh.sandbox.protocol import FrameReader, ProtocolError, encode

__all__ = ["Jail", "JailDied", "kill_in_background"]

KILL_GRACE_S = 2.0


class JailDied(Exception):
    """The jailed process is gone (or unusable); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Jail:
    def __init__(self, argv: list[str], cpu_limit_s: float) -> None:
        self.cpu_limit_s = cpu_limit_s
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the jail
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin"},  # nothing of the host's environment, no secrets
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._reader = FrameReader(self.process.stdout.fileno())
        # Held while a thread reads or writes the pipes, so that kill() from another thread
        # (a cancelled run) never closes a descriptor in use, whose number could be reused.
        self._io = threading.Lock()
        self._pipes_closed = False
        self._cpu_used_s = 0.0
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        message = self.receive(timeout)
        if message.get("op") != "ready":
            self.kill()
            raise JailDied(f"the runner sent {message.get('op')!r} instead of 'ready'")

    def send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        with self._io:
            try:
                if self._pipes_closed:
                    raise ValueError("the jail's pipes are closed")
                self._stdin.write(frame)
                self._stdin.flush()
            except (ValueError, OSError) as err:  # closed, or a broken pipe
                raise JailDied(self.death_reason()) from err

    def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next message; TimeoutError when none came within ``timeout`` s."""
        try:
            message = self._read(timeout)
        except ProtocolError as err:
            self.kill()
            raise JailDied(f"the interpreter broke the protocol ({err})") from err
        if message is None:
            raise JailDied(self.death_reason())
        return message

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """A message, or None once the stream has ended or the pipes were closed."""
        with self._io:
            if self._pipes_closed:
                return None
            try:
                return self._reader.read(timeout)
            except TimeoutError:
                raise
            except OSError:
                return None

    def kill(self) -> None:
        """End the jail and every process in it, leaving nothing to reap.

        SIGTERM lets nsjail kill and reap the jail's init itself (killing
        nsjail outright would orphan it); SIGKILL is the fallback.
        """
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with self._io:  # a reader wakes at once: the process is gone, its pipe at EOF
            self._pipes_closed = True
            for stream in (self._stdin, self.process.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()

    def death_reason(self) -> str:
        self._reap()
        code = self.process.returncode
        log = self._log_tail()
        if self._cpu_used_s >= self.cpu_limit_s - 0.5:
            return f"it used up its CPU time limit of {self.cpu_limit_s:g} s"
        if code is not None and code > 128:
            name = signal.Signals(code - 128).name if code - 128 in signal.valid_signals() else ""
            if name == "SIGKILL":
                return "it was killed (SIGKILL), e.g. for exceeding the jail's lifetime limit"
            return f"the interpreter crashed with signal {name or code - 128}"
        if "Couldn't" in log or "Failed" in log or "ERROR" in log.upper():
            return f"the jail failed: {log}"
        return f"the interpreter exited with code {code}"

    def _reap(self) -> None:
        """Wait for nsjail and note the CPU its jail used (wait4 counts reaped children)."""
        if self.process.returncode is not None:
            return
        try:
            _, status, usage = os.wait4(self.process.pid, 0)
        except ChildProcessError:
            self.process.wait()
            return
        self._cpu_used_s = usage.ru_utime + usage.ru_stime
        self.process.returncode = os.waitstatus_to_exitcode(status)
        if self.process.returncode < 0:  # nsjail itself killed by a signal
            self.process.returncode = 128 - self.process.returncode

    def _log_tail(self, limit: int = 600) -> str:
        try:
            self._log.seek(0)
            text = self._log.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines)[-limit:]

    def __del__(self) -> None:
        if getattr(self, "process", None) is not None and self.process.returncode is None:
            self.kill()


_doomed: queue.SimpleQueue[Jail] = queue.SimpleQueue()
_reaper_lock = threading.Lock()
_reaper: threading.Thread | None = None


def kill_in_background(jail: Jail) -> None:
    """Kill ``jail`` off the caller's critical path (killing and reaping takes ~3 ms).

    Should this process die first, the jail still ends: its runner reads EOF
    on stdin and exits.
    """
    global _reaper
    _doomed.put(jail)
    with _reaper_lock:
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap_forever, name="jail-reaper", daemon=True)
            _reaper.start()


def _reap_forever() -> None:
    while True:
        _doomed.get().kill()


@atexit.register
def _reap_now() -> None:
    """At exit, kill what the reaper has not reached yet (its thread is a daemon)."""
    while not _doomed.empty():
        _doomed.get().kill()
