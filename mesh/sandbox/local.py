"""``UnsafeLocalExecutor``: runs model-written code in the agent's own process.

It has no isolation and no limits: code can read files, the environment
(API keys included) and the network, and a loop hangs the run. It exists for
development on machines where the jail cannot run, is never chosen by
default, and warns every time it is created.
"""

from __future__ import annotations

import builtins
import io
import logging
import warnings
from collections.abc import Iterable
from typing import Any

from mesh.sandbox.base import ExecutionResult, ToolBridge
from mesh.sandbox.snippet import (
    DEFAULT_AUTHORIZED_IMPORTS,
    FinalAnswerSignal,
    execute_snippet,
    import_guard,
)
from mesh.text import cut
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["UnsafeLocalExecutor"]

log = logging.getLogger(__name__)
UNSAFE_WARNING = (
    "UnsafeLocalExecutor runs model-written code in this process with no sandbox: it can "
    "read your files, environment variables and network. Use it for development only."
)
DEFAULT_MAX_OUTPUT_CHARS = 20_000


class UnsafeLocalExecutor:
    """In-process executor; see the module docstring before using it."""

    def __init__(
        self,
        authorized_imports: Iterable[str] = DEFAULT_AUTHORIZED_IMPORTS,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    ) -> None:
        warnings.warn(UNSAFE_WARNING, RuntimeWarning, stacklevel=2)
        log.warning(UNSAFE_WARNING)
        self.max_output_chars = max_output_chars
        safe_builtins = dict(vars(builtins))
        safe_builtins["__import__"] = import_guard(authorized_imports)
        self._namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": safe_builtins}
        self._stubs: set[str] = set()

    def run(self, code: str, bridge: ToolBridge) -> ExecutionResult:
        output = io.StringIO()
        self._install(bridge, output)
        outcome = execute_snippet(code, self._namespace)
        return ExecutionResult(
            output=cut(output.getvalue(), self.max_output_chars),
            value=outcome.value,
            error=outcome.error,
            is_final=outcome.is_final,
            final_answer=outcome.final_answer,
        )

    def close(self) -> None:
        self._namespace.clear()

    def _install(self, bridge: ToolBridge, output: io.StringIO) -> None:
        """Refresh the tool stubs (tools may change between steps) and print."""
        names = set(bridge.tool_names())
        for stale in self._stubs - names:
            self._namespace.pop(stale, None)
        for name in names:
            self._namespace[name] = _stub(name, bridge)
        self._stubs = names

        def captured_print(
            *args: Any,
            sep: str | None = " ",
            end: str | None = "\n",
            file: Any = None,
            flush: bool = False,
        ) -> None:
            print(*args, sep=sep, end=end, file=file if file is not None else output)

        self._namespace["print"] = captured_print


def _stub(name: str, bridge: ToolBridge) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        result = bridge.call_tool(name, args, kwargs)
        if name == FINAL_ANSWER:
            raise FinalAnswerSignal(result)
        return result

    call.__name__ = name
    return call
