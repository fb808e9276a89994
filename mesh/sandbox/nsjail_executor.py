"""``NsjailExecutor``: model-written code runs in a warm jailed interpreter.

One jailed interpreter per agent run: the first snippet has the zygote fork
a fresh one, later snippets reuse it, so state persists across steps. Tool calls made by
the code come back over the pipe and run here, on the host, through the
step's ``ToolBridge`` (validated like any other call). When a snippet breaks
a limit or kills its interpreter, the step gets an error that says which,
the jail is discarded, and the next snippet starts in a fresh one with a
note that earlier state is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from mesh.errors import MeshError, RunCancelledError
from mesh.sandbox.base import ExecutionResult, ToolBridge
from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.jail import Jail, JailDied
from mesh.sandbox.zygotes import Zygote, zygote_for

__all__ = ["NsjailExecutor"]

STATE_LOST = (
    "the previous interpreter was stopped, so this code runs in a fresh one: variables, "
    "functions and imports from earlier steps are gone."
)


class NsjailExecutor:
    def __init__(
        self,
        config: SandboxConfig | None = None,
        authorized_imports: Iterable[str] = (),
        zygote: Zygote | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self.authorized_imports = sorted(authorized_imports)
        self.zygote = zygote or zygote_for(self.config, self.authorized_imports)
        self._jail: Jail | None = None
        self._had_jail = False
        self._closed = False
        self._lock = threading.Lock()

    def run(self, code: str, bridge: ToolBridge) -> ExecutionResult:
        try:
            jail, note = self._current_jail()
        except JailDied as died:
            return ExecutionResult(error=f"The sandboxed interpreter did not start: {died.reason}.")
        request = {
            "op": "exec",
            "code": code,
            "tools": list(bridge.tool_names()),
            "imports": self.authorized_imports,
            "max_output": self.config.max_output_chars,
        }
        try:
            jail.send(request)
            return self._serve(jail, bridge, note)
        except RunCancelledError:
            self._discard(jail)
            raise
        except JailDied as died:
            self._discard(jail)
            if self._closed:
                raise RunCancelledError("the run was cancelled while its code ran") from died
            return ExecutionResult(
                error=f"The sandboxed interpreter died: {died.reason}.", note=note
            )

    def close(self) -> None:
        """End the run: kill its jail. Safe to call from another thread (cancellation)."""
        with self._lock:
            self._closed = True
            jail, self._jail = self._jail, None
        if jail is not None:
            jail.kill()

    def _current_jail(self) -> tuple[Jail, str | None]:
        with self._lock:
            if self._closed:
                raise RunCancelledError("the run's sandbox was closed")
            if self._jail is not None:
                return self._jail, None
        jail = self._fork_jail()
        with self._lock:
            if self._closed:
                jail.kill()
                raise RunCancelledError("the run's sandbox was closed")
            self._jail = jail
            note = STATE_LOST if self._had_jail else None
            self._had_jail = True
        return jail, note

    def _fork_jail(self) -> Jail:
        """A fresh interpreter; a zygote that died is replaced first."""
        if self.zygote.dead:
            self.zygote = zygote_for(self.config, self.authorized_imports)
        return self.zygote.spawn()

    def _serve(self, jail: Jail, bridge: ToolBridge, note: str | None) -> ExecutionResult:
        """Answer the code's tool calls until it is done or breaks the wall-clock limit."""
        budget = self.config.wall_seconds
        while True:
            started = time.monotonic()
            try:
                message = jail.receive(timeout=budget)
            except TimeoutError:
                self._discard(jail)
                return ExecutionResult(
                    error=f"The code ran longer than the wall-clock limit of "
                    f"{self.config.wall_seconds:g} s per step and was stopped.",
                    note=note,
                )
            budget -= time.monotonic() - started  # time in host tools is not counted
            if message.get("op") == "call":
                jail.send(self._call(bridge, message))
            elif message.get("op") == "done":
                return self._result(message, note)
            else:
                raise JailDied(f"the runner sent an unexpected {message.get('op')!r} message")

    def _call(self, bridge: ToolBridge, message: dict[str, Any]) -> dict[str, Any]:
        name = str(message.get("name"))
        args, kwargs = message.get("args") or [], message.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            return _error_reply("ToolArgumentError", f"malformed call to {name}")
        try:
            value = bridge.call_tool(name, args, kwargs)
        except RunCancelledError:
            raise
        except MeshError as err:
            return _error_reply(type(err).__name__, err.message)
        return {"op": "reply", "ok": True, "value": value}

    def _result(self, message: dict[str, Any], note: str | None) -> ExecutionResult:
        error = message.get("error")
        if error and "MemoryError" in error:
            error += f"\n(The sandbox's memory limit is {self.config.memory_mb} MB.)"
        return ExecutionResult(
            output=str(message.get("output") or ""),
            value=message.get("value"),
            error=error,
            is_final=bool(message.get("final")),
            final_answer=message.get("answer"),
            note=note,
        )

    def _discard(self, jail: Jail) -> None:
        jail.kill()
        with self._lock:
            if self._jail is jail:
                self._jail = None


def _error_reply(error_type: str, message: str) -> dict[str, Any]:
    return {"op": "reply", "ok": False, "error_type": error_type, "message": message}
