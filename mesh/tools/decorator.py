"""``@tool``: build a Tool from a typed function with a Google-style docstring.

The schema comes from what the author already wrote: type hints give the
types, the docstring's summary gives the description and its ``Args:``
section the per-argument descriptions. Anything missing is refused at
decoration time, because a model cannot call a tool it was never told how to
call.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, overload

from mesh.errors import ToolDefinitionError
from mesh.tools.base import Tool
from mesh.tools.schema import OUTPUT_TYPES, InputSpec

__all__ = ["tool"]

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = (list, tuple, set, frozenset, collections.abc.Sequence)
_OBJECTS = (dict, collections.abc.Mapping)
_SECTION_KINDS = {
    "args": "args",
    "arguments": "args",
    "parameters": "args",
    "returns": "returns",
    "return": "returns",
}
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


@overload
def tool(func: Callable[..., Any], /, *, untrusted: bool = False) -> Tool: ...
@overload
def tool(*, untrusted: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None, /, *, untrusted: bool = False
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed, documented function into a ``Tool`` instance: ``@tool``, or
    ``@tool(untrusted=True)`` for a function that returns text from outside (a page it
    fetched, another program's output), which the model then reads fenced as data."""
    if func is None:
        return functools.partial(_build, untrusted=untrusted)
    return _build(func, untrusted=untrusted)


def _build(func: Callable[..., Any], *, untrusted: bool) -> Tool:
    if not callable(func) or not hasattr(func, "__name__"):
        raise ToolDefinitionError(f"@tool expects a function, got {func!r}")
    name = func.__name__
    description, arg_docs, returns_doc = parse_docstring(name, inspect.getdoc(func))
    hints = _type_hints(func)
    inputs = [_input_spec(name, param, hints, arg_docs) for param in _parameters(func)]
    undocumented = set(arg_docs) - {spec.name for spec in inputs}
    if undocumented:
        raise ToolDefinitionError(
            f"@tool {name}: docstring documents unknown argument(s) {sorted(undocumented)}"
        )
    if "return" not in hints:
        raise ToolDefinitionError(f"@tool {name}: add a return type hint")
    output_type, _ = hint_to_type(hints["return"], f"@tool {name}: return type", output=True)
    if returns_doc:
        description = f"{description}\nReturns: {returns_doc}"
    return _FunctionTool(func, name, description, inputs, output_type, untrusted=untrusted)


class _FunctionTool(Tool):
    """A Tool whose ``forward`` is a plain function."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str,
        description: str,
        inputs: list[InputSpec],
        output_type: str,
        *,
        untrusted: bool = False,
    ) -> None:
        self.func = func
        self.name = name
        self.description = description
        self.inputs = {spec.name: spec.to_dict() for spec in inputs}
        self.output_type = output_type
        functools.update_wrapper(self, func)
        super().__init__(untrusted=untrusted)

    def forward(self, **kwargs: Any) -> Any:
        return self.func(**kwargs)


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"@tool {func.__name__}: *args/**kwargs cannot be described to a model; "
                "name every argument"
            )
    return params


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception as err:  # unresolved forward references and the like
        raise ToolDefinitionError(f"@tool {func.__name__}: cannot read type hints: {err}") from err


def _input_spec(
    tool_name: str, param: inspect.Parameter, hints: dict[str, Any], docs: dict[str, str]
) -> InputSpec:
    where = f"@tool {tool_name}: argument {param.name!r}"
    if param.name not in hints:
        raise ToolDefinitionError(f"{where} needs a type hint")
    if not docs.get(param.name):
        raise ToolDefinitionError(f"{where} needs a description in the docstring's Args: section")
    type_name, nullable = hint_to_type(hints[param.name], where)
    enum, items = _enum_values(hints[param.name]), _array_items(hints[param.name])
    default = param.default
    spec = InputSpec(
        name=param.name,
        type=type_name,
        description=docs[param.name],
        nullable=nullable or default is None,
        enum=enum,
        items=items,
    )
    if default is not inspect.Parameter.empty:
        spec = dataclasses.replace(spec, default=default)
    return spec.checked()


def hint_to_type(hint: Any, where: str, *, output: bool = False) -> tuple[str, bool]:
    """Map a Python type hint to (schema type, nullable)."""
    if hint is None or hint is type(None):
        if output:
            return "null", False
        raise ToolDefinitionError(f"{where}: None alone is not an input type")
    if hint is Any:
        return "any", False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            if all(m in (int, float) for m in members):
                return "number", nullable
            raise ToolDefinitionError(f"{where}: unions of several types are not supported")
        return hint_to_type(members[0], where, output=output)[0], nullable
    if origin is typing.Literal:
        values = typing.get_args(hint)
        kinds = {_SCALARS.get(type(v)) for v in values}
        if len(kinds) != 1 or None in kinds:
            raise ToolDefinitionError(f"{where}: Literal values must share one scalar type")
        return kinds.pop() or "any", False
    base = origin or hint
    own = getattr(base, "tool_output_type", None)  # a class that names its own: Image
    if output and isinstance(own, str) and own in OUTPUT_TYPES:
        return own, False
    if base in _SCALARS:
        return _SCALARS[base], False
    if base in _ARRAYS:
        return "array", False
    if base in _OBJECTS:
        return "object", False
    raise ToolDefinitionError(f"{where}: type {hint!r} has no schema equivalent")


def _enum_values(hint: Any) -> tuple[Any, ...] | None:
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return None


def _array_items(hint: Any) -> str | None:
    for candidate in (hint, *typing.get_args(hint)):
        base = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if base in _ARRAYS and len(args) == 1:
            try:
                return hint_to_type(args[0], "array items")[0]
            except ToolDefinitionError:
                return None
    return None


def parse_docstring(name: str, doc: str | None) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {arg: text}, returns text)."""
    if not doc or not doc.strip():
        raise ToolDefinitionError(f"@tool {name}: add a docstring that says what the tool does")
    sections: dict[str, list[str]] = {"summary": [], "args": [], "returns": [], "other": []}
    current = "summary"
    for line in doc.splitlines():
        match = _SECTION.match(line)
        if match:
            current = _SECTION_KINDS.get(match.group(1).lower(), "other")
        else:
            sections[current].append(line)
    description = " ".join(" ".join(sections["summary"]).split())
    if not description:
        raise ToolDefinitionError(f"@tool {name}: the docstring needs a summary before Args:")
    returns = " ".join(" ".join(sections["returns"]).split())
    return description, _parse_args_section(sections["args"]), returns


def _parse_args_section(lines: list[str]) -> dict[str, str]:
    docs: dict[str, str] = {}
    current: str | None = None
    indent: int | None = None
    for line in lines:
        if not line.strip():
            continue
        level = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line.strip())
        if match and (indent is None or level <= indent):
            indent = level
            current = match.group(1).lstrip("*")
            docs[current] = match.group(3).strip()
        elif current is not None:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs
