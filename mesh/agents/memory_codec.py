"""The pieces of a memory's JSON form: values made JSON-safe, and checked reads.

A final answer, a tool's result or a code agent's tool arguments can be any
Python value. What is exactly JSON (None, bools, strings, ints, finite
floats, lists and string-keyed dicts of these, nested at most
``MAX_VALUE_DEPTH`` levels) is written as it is; anything else (a tuple, a
set, an object, NaN, a value that contains itself) becomes its repr with a
marker, ``{"$repr": "..."}``, and is read back as a ``ReprValue``. Written
again, a ``ReprValue`` is the same marker: a memory read from JSON writes
the very JSON it was read from. (A dict whose only key is ``"$repr"`` would
read as a marker, so it is written as its repr too.)

The reads are for JSON from anywhere (a file, a caller): every field is
checked, and anything that is not what ``to_dict`` writes is a ``ValueError``
naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from mesh.errors import ErrorInfo, MeshError
from mesh.models.base import ChatMessage, Role, TokenUsage, ToolCall
from mesh.models.images import Image

__all__ = [
    "MARKER",
    "MAX_VALUE_DEPTH",
    "Fields",
    "ReprValue",
    "error_dict",
    "error_of",
    "exception_of",
    "images_of",
    "json_safe",
    "message_of",
    "restored",
    "usage_of",
]

MARKER = "$repr"
MAX_VALUE_DEPTH = 32
"""Deeper values are kept as their repr: a memory's JSON stays within the depth that
``untrusted_json`` reads back (64 levels, the memory's own structure included)."""
_MAX_INT_BITS = 13_000  # about 3,900 digits: Python refuses to print ints of over 4,300
_ROLES = frozenset(get_args(Role))


@dataclass(frozen=True)
class ReprValue:
    """A value that was not JSON, as its repr: what an exported memory keeps of it."""

    text: str

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def json_safe(value: Any, _inside: tuple[int, ...] = ()) -> Any:
    """``value`` as JSON (see the module's docstring): itself if it is JSON, else a marker.
    (``_inside``: the ids of the lists and dicts it is in, to find one inside itself.)"""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= _MAX_INT_BITS else _marker(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _marker(value)
    if isinstance(value, ReprValue):
        return {MARKER: value.text}
    if len(_inside) < MAX_VALUE_DEPTH and id(value) not in _inside:
        inside = (*_inside, id(value))
        if isinstance(value, list):
            return [json_safe(item, inside) for item in value]
        if isinstance(value, dict) and _plain_dict(value):
            return {key: json_safe(item, inside) for key, item in value.items()}
    return _marker(value)


def restored(value: Any) -> Any:
    """What ``json_safe`` wrote, read back: markers become ``ReprValue``."""
    if isinstance(value, list):
        return [restored(item) for item in value]
    if isinstance(value, dict):
        if list(value) == [MARKER]:
            if not isinstance(value[MARKER], str):
                raise ValueError(f"a {MARKER!r} marker holds a string")
            return ReprValue(value[MARKER])
        return {key: restored(item) for key, item in value.items()}
    return value


def _plain_dict(value: dict[Any, Any]) -> bool:
    return all(isinstance(key, str) for key in value) and list(value) != [MARKER]


def _marker(value: Any) -> dict[str, str]:
    try:
        text = repr(value)
    except Exception as err:  # a broken __repr__, an int too long to print
        text = f"<{type(value).__name__} object: its repr failed with {type(err).__name__}>"
    return {MARKER: text}


class Fields:
    """Checked reads of one JSON object; ``what`` names it in errors ("step 3")."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{what} must be a JSON object")
        self.data: dict[str, Any] = data
        self.what = what

    def value(self, key: str) -> Any:
        if key not in self.data:
            raise ValueError(f"{self.what} has no {key!r}")
        return self.data[key]

    def text(self, key: str) -> str:
        return self._typed(key, str, "a string")  # type: ignore[no-any-return]

    def optional_text(self, key: str) -> str | None:
        return None if self.value(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        return self._typed(key, bool, "true or false")  # type: ignore[no-any-return]

    def count(self, key: str) -> int:
        value = self.value(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{self.what}'s {key!r} must be a count (an int, 0 or more)")
        return value

    def number(self, key: str) -> float:
        value = self.value(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{self.what}'s {key!r} must be a number")
        return value

    def optional_number(self, key: str) -> float | None:
        return None if self.value(key) is None else self.number(key)

    def items(self, key: str) -> list[Any]:
        return self._typed(key, list, "a list")  # type: ignore[no-any-return]

    def _typed(self, key: str, kind: type, name: str) -> Any:
        value = self.value(key)
        if not isinstance(value, kind):
            raise ValueError(f"{self.what}'s {key!r} must be {name}")
        return value


def message_of(data: Any, what: str, known: Mapping[str, Image] | None = None) -> ChatMessage:
    """A chat message as ``ChatMessage.to_dict`` writes it; its images given by their digest
    alone are those of ``known`` (by sha256)."""
    fields = Fields(data, what)
    role = fields.value("role")
    if role not in _ROLES:
        raise ValueError(f"{what}'s role must be one of {', '.join(sorted(_ROLES))}")
    calls = data.get("tool_calls", [])
    if not isinstance(calls, list):
        raise ValueError(f"{what}'s 'tool_calls' must be a list")
    call_fields = [Fields(call, f"a tool call of {what}") for call in calls]
    call_id = data.get("tool_call_id")
    if not isinstance(call_id, str | None):
        raise ValueError(f"{what}'s 'tool_call_id' must be a string")
    return ChatMessage(
        role=role,
        content=fields.optional_text("content"),
        tool_calls=tuple(ToolCall(c.text("id"), c.text("name"), c.text("arguments"))
                         for c in call_fields),
        tool_call_id=call_id,
        images=images_of(data.get("images", []), what, known),
    )  # fmt: skip


def images_of(data: Any, what: str, known: Mapping[str, Image] | None = None) -> tuple[Image, ...]:
    """Images as ``Image.to_dict`` writes them (base64), each checked as any image is, or
    as ``Image.digest`` does, for one of ``known``: a memory keeps each image's bytes once
    (with the task, or with the step whose tools returned it), and its model inputs, which
    show them again at every step, keep their digests."""
    if not isinstance(data, list):
        raise ValueError(f"{what}'s 'images' must be a list")
    try:
        return tuple(_image_of(image, known or {}) for image in data)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _image_of(data: Any, known: Mapping[str, Image]) -> Image:
    if isinstance(data, Mapping) and "data" not in data and "sha256" in data:
        image = known.get(str(data["sha256"]))
        if image is None:
            raise ValueError("an image given by its digest is not one of the memory's images")
        return image
    return Image.from_dict(data)


def usage_of(data: Any, what: str) -> TokenUsage:
    fields = Fields(data, what)
    return TokenUsage(fields.count("input_tokens"), fields.count("output_tokens"))


def error_dict(error: ErrorInfo | None) -> dict[str, Any] | None:
    """An error as data: the audit log's fields (reason, message, retryable), and metadata."""
    if error is None:
        return None
    return {"reason": error.reason, "message": error.message, "retryable": error.retryable,
            "metadata": dict(error.metadata)}  # fmt: skip


def error_of(data: Any, what: str) -> ErrorInfo | None:
    if data is None:
        return None
    fields = Fields(data, what)
    metadata = fields.value("metadata")
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{what}'s metadata must map strings to strings")
    return ErrorInfo(fields.text("reason"), fields.text("message"), fields.flag("retryable"),
                     metadata)  # fmt: skip


def exception_of(error: ErrorInfo) -> MeshError:
    """An exception whose ``ErrorInfo.of`` is ``error`` again: of the class its reason names,
    raised from one of its cause's code. (A tool call record keeps its exception, and its
    error as data is computed from it.)"""
    if set(error.metadata) - {"cause"}:
        raise ValueError("a tool call's error metadata holds only its 'cause'")
    exception = error.to_exception()
    exception.code = error.reason  # a reason no class has (a remote service's) stays itself
    if "cause" in error.metadata:
        cause = MeshError("")
        cause.code = error.metadata["cause"]
        exception.__cause__ = cause
    return exception
