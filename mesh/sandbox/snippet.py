"""Run one snippet in a persistent namespace: stdlib only.

Shared by every executor, and importable inside the jail where nothing but
the standard library exists. A snippet is compiled under one filename so
that tracebacks can be cut down to the frames of the model's own code, which
is the part a model can act on.
"""

from __future__ import annotations

import ast
import builtins
import io

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = [
    "DEFAULT_AUTHORIZED_IMPORTS",
    "CappedOutput",
    "FinalAnswerSignal",
    "SnippetOutcome",
    "execute_snippet",
    "import_guard",
    "install_tools",
]

SNIPPET_FILENAME = "<code>"
FINAL_ANSWER = "final_answer"
TOOLS_KEY = "__mesh_tools__"

DEFAULT_AUTHORIZED_IMPORTS = frozenset({
    "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
    "fractions", "functools", "heapq", "itertools", "json", "math", "operator", "queue",
    "random", "re", "stat", "statistics", "string", "textwrap", "time", "typing",
    "unicodedata",
})  # fmt: skip


class FinalAnswerSignal(BaseException):
    """Raised by the ``final_answer`` stub; a BaseException so that a bare
    ``except Exception`` in model code cannot swallow the end of the run."""

    def __init__(self, value: Any) -> None:
        super().__init__("final_answer")
        self.value = value


class SnippetOutcome:
    __slots__ = ("error", "final_answer", "is_final", "value")

    def __init__(
        self,
        value: str | None = None,
        error: str | None = None,
        is_final: bool = False,
        final_answer: Any = None,
    ) -> None:
        self.value = value
        self.error = error
        self.is_final = is_final
        self.final_answer = final_answer


class CappedOutput(io.TextIOBase):
    """A text sink for print(): keeps the first ``limit`` characters, counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[output cut: {self.dropped} more characters not shown]"
        return out


def install_tools(
    namespace: dict[str, Any],
    names: Iterable[str],
    call: Callable[[str, tuple[Any, ...], dict[str, Any]], Any],
) -> None:
    """Make each tool a function in ``namespace`` that forwards to ``call``.

    Tools removed since the last snippet disappear; ``final_answer`` ends the
    snippet with its (host-validated) value.
    """
    for stale in namespace.pop(TOOLS_KEY, ()):
        namespace.pop(stale, None)
    names = list(names)
    for name in names:
        namespace[name] = _stub(name, call)
    namespace[TOOLS_KEY] = names


def _stub(name: str, call: Callable[[str, tuple[Any, ...], dict[str, Any]], Any]) -> Any:
    def tool(*args: Any, **kwargs: Any) -> Any:
        result = call(name, args, kwargs)
        if name == FINAL_ANSWER:
            raise FinalAnswerSignal(result)
        return result

    tool.__name__ = name
    return tool


def import_guard(authorized: Iterable[str]) -> Callable[..., Any]:
    """An ``__import__`` that only lets the authorised top-level modules in."""
    allowed = frozenset(authorized)
    real_import = builtins.__import__

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        root = name.split(".")[0]
        if level == 0 and "*" not in allowed and root not in allowed:
            raise ImportError(
                f"import of {root!r} is not allowed. Allowed modules: "
                f"{', '.join(sorted(allowed))}. To allow it, add {root!r} to the agent's "
                "additional_authorized_imports."
            )
        return real_import(name, globals, locals, fromlist, level)

    return guarded_import


def execute_snippet(code: str, namespace: dict[str, Any]) -> SnippetOutcome:
    """Execute ``code`` in ``namespace``; the last expression's value is reported."""
    try:
        tree = ast.parse(code, filename=SNIPPET_FILENAME)
    except SyntaxError as err:
        return SnippetOutcome(error=_format_syntax_error(err))
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
    else:
        last = None
    try:
        exec(compile(tree, SNIPPET_FILENAME, "exec"), namespace)
        value = None
        if last is not None:
            expr = ast.Expression(last.value)
            value = eval(compile(expr, SNIPPET_FILENAME, "eval"), namespace)
    except FinalAnswerSignal as signal:
        return SnippetOutcome(is_final=True, final_answer=signal.value)
    except SystemExit as err:
        return SnippetOutcome(
            error=f"the code called exit({err.code!r}); use final_answer() to finish"
        )
    except Exception as err:
        return SnippetOutcome(error=format_exception(err))
    return SnippetOutcome(value=None if value is None else _repr(value))


def format_exception(err: BaseException) -> str:
    """The traceback frames of the snippet itself, then the exception line.

    Written out by hand, to keep only the frames of the model's own code.
    """
    lines = []
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == SNIPPET_FILENAME:
            lines.append(f"  line {tb.tb_lineno}, in {code.co_name}")
        tb = tb.tb_next
    head = "Traceback (code lines only):\n" + "\n".join(lines) + "\n" if lines else ""
    kind = type(err).__qualname__
    module = type(err).__module__
    if module not in ("builtins", "__main__"):
        kind = f"{module}.{kind}"
    message = str(err)
    return head + (f"{kind}: {message}" if message else kind)


def _format_syntax_error(err: SyntaxError) -> str:
    where = f"line {err.lineno}" + (f", column {err.offset}" if err.offset else "")
    text = (err.text or "").rstrip("\n")
    caret = " " * max(0, (err.offset or 1) - 1) + "^" if text else ""
    detail = f"\n    {text}\n    {caret}" if text else ""
    return f"SyntaxError: {err.msg} ({where}){detail}"


def _repr(value: Any, limit: int = 2000) -> str:
    try:
        text = repr(value)
    except Exception as err:  # a user-defined __repr__ may raise
        text = f"<unrepresentable {type(value).__name__}: {err}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
