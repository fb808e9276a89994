"""Typed tool schemas and the validation every tool call goes through.

A schema is the contract between a model and a tool: the model sees it (as
JSON schema), and every call, whether from a JSON tool call or from code, is
checked against it before the tool runs. Validation returns the normalised
arguments or raises ``ToolArgumentError`` with a message written for the
model to read and correct its call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import ToolArgumentError, ToolDefinitionError
from mesh.text import clip

INPUT_TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")
OUTPUT_TYPES = (*INPUT_TYPES, "null", "image")
"""``image``: the tool returns a ``mesh.models.images.Image``, shown to the model at the next
step (smolagents' output type of the same name)."""

_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class InputSpec:
    """One named input of a tool."""

    name: str
    type: str
    description: str
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    items: str | None = None
    default: Any = field(default=_NO_DEFAULT, compare=False)

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> InputSpec:
        """Read the smolagents-style ``inputs`` entry of a Tool class."""
        if not isinstance(spec, Mapping):
            raise ToolDefinitionError(f"input {name!r}: spec must be a dict, got {spec!r}")
        unknown = set(spec) - {"type", "description", "nullable", "enum", "items", "default"}
        if unknown:
            raise ToolDefinitionError(f"input {name!r}: unknown keys {sorted(unknown)}")
        if "type" not in spec or "description" not in spec:
            raise ToolDefinitionError(f"input {name!r}: needs 'type' and 'description'")
        enum = spec.get("enum")
        return cls(
            name=name,
            type=spec["type"],
            description=spec["description"],
            nullable=bool(spec.get("nullable", False)),
            enum=tuple(enum) if enum is not None else None,
            items=spec.get("items"),
            default=spec.get("default", _NO_DEFAULT),
        ).checked()

    def checked(self) -> InputSpec:
        if not self.name.isidentifier():
            raise ToolDefinitionError(f"input name {self.name!r} is not a Python identifier")
        if self.type not in INPUT_TYPES:
            raise ToolDefinitionError(
                f"input {self.name!r}: type {self.type!r} is not one of {', '.join(INPUT_TYPES)}"
            )
        if self.items is not None and self.items not in INPUT_TYPES:
            raise ToolDefinitionError(f"input {self.name!r}: items type {self.items!r} unknown")
        if not self.description.strip():
            raise ToolDefinitionError(f"input {self.name!r} has no description")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The smolagents-style spec (round-trips through ``from_dict``)."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.nullable:
            out["nullable"] = True
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.items is not None:
            out["items"] = self.items
        if not self.required:
            out["default"] = self.default
        return out

    def to_json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description}
        if self.type != "any":
            out["type"] = [self.type, "null"] if self.nullable else self.type
        if self.type == "array" and self.items and self.items != "any":
            out["items"] = {"type": self.items}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if not self.required and _is_json_value(self.default):
            out["default"] = self.default
        return out


def _is_json_value(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def json_schema(inputs: Sequence[InputSpec]) -> dict[str, Any]:
    """The JSON schema of a tool's parameters object."""
    return {
        "type": "object",
        "properties": {spec.name: spec.to_json_schema() for spec in inputs},
        "required": [spec.name for spec in inputs if spec.required],
        "additionalProperties": False,
    }


def bind_arguments(
    tool_name: str, inputs: Sequence[InputSpec], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Map a Python-style call (positional and keyword) onto input names."""
    if len(args) > len(inputs):
        raise ToolArgumentError(
            f"{tool_name}() takes {len(inputs)} argument(s) but {len(args)} were given"
        )
    bound = {spec.name: value for spec, value in zip(inputs, args, strict=False)}
    for name, value in kwargs.items():
        if name in bound:
            raise ToolArgumentError(f"{tool_name}() got multiple values for argument {name!r}")
        bound[name] = value
    return bound


def validate_arguments(
    tool_name: str, inputs: Sequence[InputSpec], arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """Check named arguments against the schema; return them normalised.

    Fills defaults, turns integral floats into ints for integer inputs (JSON
    does not distinguish ``5`` from ``5.0``), and reports every problem at once
    so a model can fix its call in one go.
    """
    if not isinstance(arguments, Mapping):
        raise ToolArgumentError(
            f"{tool_name}: arguments must be an object of named values, "
            f"got {type(arguments).__name__}"
        )
    by_name = {spec.name: spec for spec in inputs}
    problems = [f"unknown argument {name!r}" for name in arguments if name not in by_name]
    result: dict[str, Any] = {}
    for spec in inputs:
        if spec.name not in arguments:
            if spec.required:
                problems.append(f"missing required argument {spec.name!r} ({spec.type})")
            else:
                result[spec.name] = spec.default
            continue
        try:
            result[spec.name] = _check_value(spec, arguments[spec.name])
        except ValueError as err:
            problems.append(f"argument {spec.name!r}: {err}")
    if problems:
        expected = ", ".join(f"{s.name}: {s.type}" for s in inputs) or "no arguments"
        raise ToolArgumentError(
            f"invalid call to {tool_name}: " + "; ".join(problems) + f". Expected ({expected})."
        )
    return result


def _check_value(spec: InputSpec, value: Any) -> Any:
    if value is None:
        if spec.nullable or spec.type == "any" or (not spec.required and spec.default is None):
            return None
        raise ValueError(f"null is not allowed, expected {spec.type}")
    value = check_type(spec.type, value)
    if spec.type == "array" and spec.items:
        value = [check_type(spec.items, item) for item in value]
    if spec.enum is not None and value not in spec.enum:
        raise ValueError(f"{value!r} is not one of {list(spec.enum)}")
    return value


def check_type(type_name: str, value: Any) -> Any:
    """Return ``value`` if it has JSON type ``type_name`` (normalised), else raise ValueError."""
    got = _json_type_name(value)
    if type_name == "any":
        return value
    if type_name == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif type_name == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("expected a finite number")
            return value
    elif type_name == "string" and isinstance(value, str):
        return value
    elif type_name == "boolean" and isinstance(value, bool):
        return value
    elif type_name == "array" and isinstance(value, list | tuple):
        return list(value)
    elif type_name == "object" and isinstance(value, Mapping):
        return dict(value)
    elif type_name == "null" and value is None:
        return None
    raise ValueError(f"expected {type_name}, got {got} {clip(repr(value), 40)}")


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
