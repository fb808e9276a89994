"""``Jail``: one run's jailed interpreter, seen from the host.

It owns the interpreter's two pipes and speaks the frame protocol over them;
its ``Ending`` (the zygote's handle on the process) kills it and, once it is
gone, says why (exit code, signal, CPU used), which becomes the observation
the model reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Protocol

from mesh.sandbox.protocol import FrameReader, ProtocolError, encode

__all__ = ["Ending", "Jail", "JailDied", "death_reason", "signal_name"]


class JailDied(Exception):
    """The jailed process is gone (or unusable); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ending(Protocol):
    """How one jailed process is ended, and how it ended."""

    @property
    def alive(self) -> bool: ...

    def kill(self) -> None:
        """End the process and everything it started; returns at once."""
        ...

    def death_reason(self) -> str:
        """Why the process is gone, waiting briefly for the news."""
        ...


class Jail:
    def __init__(self, to_jail: int, from_jail: int, ending: Ending) -> None:
        self.ending = ending
        self._stdin = os.fdopen(to_jail, "wb")
        self._reader = FrameReader(from_jail)
        # Held while a thread reads or writes the pipes, so that kill() from another thread
        # (a cancelled run) never closes a descriptor in use, whose number could be reused.
        self._io = threading.Lock()
        self._pipes_closed = False
        self.greeted = False
        """Whether the interpreter said "ready": it raised its walls and started serving."""

    @property
    def alive(self) -> bool:
        return not self._pipes_closed and self.ending.alive

    def wait_ready(self, timeout: float) -> None:
        """Wait for the greeting (work may be sent before it: ``receive`` passes over it)."""
        message = self._receive(timeout)
        if message.get("op") != "ready":
            self.kill()
            raise JailDied(f"the runner sent {message.get('op')!r} instead of 'ready'")
        self.greeted = True

    def send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        with self._io:
            try:
                if self._pipes_closed:
                    raise ValueError("the jail's pipes are closed")
                self._stdin.write(frame)
                self._stdin.flush()
            except (ValueError, OSError) as err:  # closed, or a broken pipe
                raise JailDied(self._why_gone()) from err

    def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next message but the greeting; TimeoutError when none came within ``timeout`` s."""
        message = self._receive(timeout)
        if message.get("op") == "ready" and not self.greeted:
            self.greeted = True
            message = self._receive(timeout)
        return message

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        try:
            message = self._read(timeout)
        except ProtocolError as err:
            self.kill()
            raise JailDied(f"the interpreter broke the protocol ({err})") from err
        if message is None:
            raise JailDied(self._why_gone())
        return message

    def _why_gone(self) -> str:
        reason = self.ending.death_reason()
        return reason if self.greeted else f"it never started ({reason})"

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
        """End the interpreter and every process in it; safe from any thread, at any time."""
        self.ending.kill()
        with self._io:  # a reader wakes at once: the process is gone, its pipe at EOF
            if self._pipes_closed:
                return
            self._pipes_closed = True
            with contextlib.suppress(OSError):
                self._stdin.close()
            with contextlib.suppress(OSError):
                os.close(self._reader.fd)

    def __del__(self) -> None:
        if not getattr(self, "_pipes_closed", True):
            self.kill()


def death_reason(code: int | None, cpu_used_s: float, cpu_limit_s: float) -> str:
    """Why an interpreter ended with ``code`` (128 + N for signal N), in words."""
    if cpu_used_s >= cpu_limit_s - 0.5:
        return f"it used up its CPU time limit of {cpu_limit_s:g} s"
    name = signal_name(code)
    if name == "SIGKILL":
        return "it was killed (SIGKILL)"
    if name is not None:
        return f"the interpreter crashed with signal {name}"
    return f"the interpreter exited with code {code}"


def signal_name(code: int | None) -> str | None:
    """The signal that ended a process with exit ``code``, or None for a plain exit.

    A death by signal N reads -N from ``subprocess`` and 128 + N from the zygote (as
    from a shell). Only a real signal's number counts: 255, what nsjail exits with when
    it cannot start the jail, is an exit code, not "signal 127".
    """
    if code is None:
        return None
    number = -code if code < 0 else code - 128
    if number not in signal.valid_signals():
        return None
    try:
        return signal.Signals(number).name
    except ValueError:  # the real-time signals between SIGRTMIN and SIGRTMAX have no name
        return str(number)
