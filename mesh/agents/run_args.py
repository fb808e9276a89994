"""``additional_args``: values a caller hands a run, beside its task (smolagents' name).

A code agent finds each as a variable in its interpreter (in the jail: set there by an
assignment of the value's literal, never by code of the caller's); every agent's model
reads what they are, appended to the task. They are JSON values, so that they mean the same
in process and across the mesh, where they travel as one JSON object on the run request.
A caller controls them: their number, their names and their size are bounded, and an
error names the argument, never repeats its value.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Iterable, Mapping
from typing import Any

from mesh import untrusted_json
from mesh.errors import InvalidRequestError
from mesh.text import clip

__all__ = ["MAX_ARGS", "MAX_ARGS_BYTES", "args_from_json", "assignments", "checked_args",
           "described"]  # fmt: skip

MAX_ARGS = 32
MAX_ARGS_BYTES = 256 * 1024
"""The JSON of all of a run's arguments together (what the wire carries)."""
MAX_NAME_CHARS = 64
MAX_PREVIEW_CHARS = 300
"""How much of each value the task's note shows the model (the code has all of it)."""


def checked_args(values: Mapping[str, Any] | None, taken: Iterable[str] = ()) -> dict[str, Any]:
    """``values`` as JSON values (a copy), or a clear error: too many, a name that is not a
    plain identifier or is ``taken`` (a tool's), a value JSON cannot hold, too large."""
    if not values:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidRequestError("additional_args must be a mapping of names to JSON values")
    if len(values) > MAX_ARGS:
        raise InvalidRequestError(f"additional_args has {len(values)} entries; at most {MAX_ARGS}")
    reserved = set(taken)
    for name in values:
        _check_name(name, reserved)
    try:
        text = json.dumps(dict(values), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        reason = clip(str(err), 200)
        raise InvalidRequestError(f"additional_args must be JSON values: {reason}") from None
    copy: dict[str, Any] = _parsed(text)
    return copy


def args_from_json(text: str, taken: Iterable[str] = ()) -> dict[str, Any]:
    """The arguments a run request carries (a JSON object; empty for none)."""
    if not text:
        return {}
    values = _parsed(text)
    if not isinstance(values, dict):
        raise InvalidRequestError("additional_args must be a JSON object")
    return checked_args(values, taken)


def described(values: Mapping[str, Any], *, as_variables: bool) -> str:
    """The note appended to the task: each argument's name, type and a preview."""
    where = ("that your code can use directly as variables" if as_variables
             else "given with the task")  # fmt: skip
    lines = [f"You have been provided with these additional arguments, {where}:"]
    for name, value in values.items():
        preview = clip(json.dumps(value, ensure_ascii=False), MAX_PREVIEW_CHARS, one_line=True)
        lines.append(f"- {name} ({_kind(value)}): {preview}")
    return "\n".join(lines)


def assignments(values: Mapping[str, Any]) -> str:
    """Python that binds each argument to its name: literals only (``repr`` of JSON values
    is Python), so nothing of the caller's runs as code."""
    return "\n".join(f"{name} = {value!r}" for name, value in values.items())


def _check_name(name: Any, reserved: set[str]) -> None:
    shown = clip(repr(name), MAX_NAME_CHARS + 10)
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(f"additional_args name {shown}: a string of at most "
                                  f"{MAX_NAME_CHARS} characters")  # fmt: skip
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise InvalidRequestError(f"additional_args name {shown} must be a Python identifier "
                                  "not starting with _")  # fmt: skip
    if name in reserved:
        raise InvalidRequestError(f"additional_args name {shown} is taken by a tool")


def _parsed(text: str) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ARGS_BYTES:
        raise InvalidRequestError(f"additional_args is over {MAX_ARGS_BYTES} bytes of JSON")
    try:
        return untrusted_json.loads(text)
    except ValueError as err:  # not JSON, or nested too deeply
        reason = clip(str(err), 200)
        raise InvalidRequestError(f"additional_args is not usable JSON: {reason}") from None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null")  # fmt: skip
