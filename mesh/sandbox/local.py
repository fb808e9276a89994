"""``UnsafeLocalExecutor``: runs model-written code in the agent's own process.

It has no isolation and no limits: code can read files, the environment
(API keys included) and the network, and a loop hangs the run. It exists for
development on machines where the jail cannot run, is never chosen by
default, and warns every time it is created.
"""

from __future__ import annotations

import builtins
import functools
import logging
import warnings
from collections.abc import Iterable
from typing import Any

from mesh.sandbox.base import ExecutionResult, ToolBridge
from mesh.sandbox.snippet import (
    DEFAULT_AUTHORIZED_IMPORTS,
    CappedOutput,
    execute_snippet,
    import_guard,
    install_tools,
)

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

    def run(self, code: str, bridge: ToolBridge) -> ExecutionResult:
        output = CappedOutput(self.max_output_chars)
        install_tools(self._namespace, bridge.tool_names(), bridge.call_tool)
        self._namespace["print"] = functools.partial(print, file=output)
        outcome = execute_snippet(code, self._namespace)
        return ExecutionResult(
            output=output.text(),
            value=outcome.value,
            error=outcome.error,
            is_final=outcome.is_final,
            final_answer=outcome.final_answer,
        )

    def close(self) -> None:
        self._namespace.clear()
