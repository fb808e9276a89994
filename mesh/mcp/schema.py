"""From an MCP tool's ``inputSchema`` (JSON Schema) to smolmesh's typed inputs.

Each top-level property becomes an ``InputSpec``, which the agents, prompts
and ``Tool.validate`` understand. The schema is kept too: every call is also
checked against it with ``jsonschema`` (the draft it declares, 2020-12 by
default, formats included), so what an ``InputSpec`` cannot say (nested
properties, minimum, pattern, lengths) is still enforced before the call goes
out, and the model is shown that schema rather than a summary of it. Nothing
is loosened: a construct neither can express is refused at start, by name.

    JSON Schema (per top-level property)       InputSpec
    type string|integer|number|boolean         same type
    type array (+ items with a simple type)    array (items: that type, else any)
    type object (nested keywords kept)         object
    ["x", "null"], anyOf/oneOf [x, {null}]     x, nullable
    enum / const                               enum (type inferred if absent)
    no type at all                             any
    default                                    default; optional without one: None
    description                                description (else generated, saying so)

Refused, naming the tool and the input: ``oneOf``/``anyOf`` other than the
nullable pair, ``allOf``, ``not``, ``if``/``then``/``else``, several non-null
types, a property that accepts nothing or only null, property names that are
not Python identifiers, ``required`` names that are not declared, a top-level
``patternProperties`` or ``additionalProperties`` schema (an open-ended map
of arguments), and ``$ref`` other than a non-recursive local JSON pointer
(local ones are inlined, so models that do not follow ``$ref`` see it all).
Deeper in the schema, anything ``jsonschema`` checks is accepted as is.
Undeclared top-level arguments are never sent, so the model is shown
``additionalProperties: false``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.errors import ConfigError, ToolArgumentError
from mesh.text import clip
from mesh.tools.schema import INPUT_TYPES, InputSpec

__all__ = ["InputSchema", "convert_input_schema"]

MAX_DESCRIPTION_CHARS = 2_000
MAX_REF_EXPANSIONS = 1_000
_COMPOSITION = ("oneOf", "anyOf", "allOf", "not", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip


class SchemaRefused(Exception):
    """A construct smolmesh cannot express (the message says which, for the refusal)."""


@dataclass(frozen=True)
class InputSchema:
    specs: tuple[InputSpec, ...]
    model_schema: dict[str, Any]
    """What the model sees: the server's schema, local $refs inlined, closed to extra keys."""
    validator: Any
    """A ``jsonschema`` validator of the inlined schema, with format checking."""

    def check(self, tool_name: str, arguments: Mapping[str, Any]) -> None:
        """Raise ``ToolArgumentError`` unless ``arguments`` satisfy the server's schema."""
        errors = sorted(
            self.validator.iter_errors(dict(arguments)), key=lambda e: [str(p) for p in e.path]
        )
        if errors:
            shown = "; ".join(_describe(error) for error in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise ToolArgumentError(f"invalid call to {tool_name}: {shown}{more}")


def _describe(error: Any) -> str:
    """One short line per problem, never the whole of a long argument; inside an anyOf (a
    nullable object, say) the most relevant sub-problem rather than "not valid under any"."""
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

    error = best_match([error])
    where = "/".join(str(part) for part in error.absolute_path) or "arguments"
    return f"{where}: {clip(error.message, 160, one_line=True)}"


def convert_input_schema(schema: Any, where: str) -> InputSchema:
    """``where`` names the tool in errors (``mcp server files: tool read_file``)."""
    try:
        return _convert(schema)
    except SchemaRefused as err:
        raise ConfigError(f"{where}: {err}") from None


def _convert(schema: Any) -> InputSchema:
    # Imported here: ``import mesh`` stays cheap for those who use no MCP server. jsonschema
    # ships no type information (and typeshed's stubs are not a dependency).
    from jsonschema import FormatChecker, SchemaError  # type: ignore[import-untyped]
    from jsonschema.validators import (  # type: ignore[import-untyped]
        Draft202012Validator,
        validator_for,
    )

    if not isinstance(schema, dict):
        raise SchemaRefused("its inputSchema is not a JSON object")
    validator_class = validator_for(schema, default=Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except SchemaError as err:
        raise SchemaRefused(
            f"its inputSchema is not valid JSON Schema: {clip(err.message, 160)}"
        ) from None
    inlined = _Inliner(schema).schema(schema)
    if inlined.get("type", "object") != "object":
        raise SchemaRefused("its inputSchema does not describe an object of named arguments")
    for keyword in _COMPOSITION:
        if keyword in inlined:
            raise SchemaRefused(f"its inputSchema uses {keyword} at the top level, which "
                                "smolmesh cannot express")  # fmt: skip
    extra = inlined.get("additionalProperties")
    if inlined.get("patternProperties") or (isinstance(extra, dict) and extra):
        raise SchemaRefused(
            "its inputSchema takes arbitrary argument names (patternProperties or an "
            "additionalProperties schema), which smolmesh cannot express"
        )
    properties = inlined.get("properties", {})
    required = inlined.get("required", [])
    if undeclared := [name for name in required if name not in properties]:
        raise SchemaRefused(f"its inputSchema requires {', '.join(map(repr, undeclared))} "
                            "without declaring it")  # fmt: skip
    specs = tuple(_input_spec(name, prop, name in required) for name, prop in properties.items())
    model_schema = {key: value for key, value in inlined.items() if key not in ("$schema", "$id")}
    model_schema.update(type="object", properties=properties, additionalProperties=False)
    validator = validator_class(inlined, format_checker=FormatChecker())
    return InputSchema(specs=specs, model_schema=model_schema, validator=validator)


def _input_spec(name: str, prop: Any, required: bool) -> InputSpec:
    if not name.isidentifier():
        raise SchemaRefused(f"input {clip(name, 60)!r} is not a Python identifier, which "
                            "smolmesh tools need")  # fmt: skip
    if prop is True:
        prop = {}
    if not isinstance(prop, dict):
        raise SchemaRefused(f"input {name!r} accepts no value at all")
    prop, nullable = _unwrap_nullable(name, prop)
    for keyword in _COMPOSITION:
        if keyword in prop:
            raise SchemaRefused(f"input {name!r} uses {keyword}, which smolmesh cannot express")
    type_name, type_nullable = _type_of(name, prop)
    items = prop.get("items")
    item_type = items.get("type") if isinstance(items, dict) else None
    description = prop.get("description")
    if not isinstance(description, str) or not description.strip():
        description = f"The {name} argument (the server gives no description)."
    kwargs: dict[str, Any] = {}
    if "default" in prop and not required:
        kwargs["default"] = prop["default"]
    elif not required:
        kwargs["default"] = None
    enum = prop.get("enum", [prop["const"]] if "const" in prop else None)
    return InputSpec(
        name=name,
        type=type_name,
        description=clip(description, MAX_DESCRIPTION_CHARS),
        nullable=nullable or type_nullable or (enum is not None and None in enum),
        enum=tuple(enum) if enum is not None else None,
        items=item_type if type_name == "array" and item_type in INPUT_TYPES else None,
        **kwargs,
    ).checked()


def _unwrap_nullable(name: str, prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``anyOf: [X, {"type": "null"}]`` (or oneOf) is X, nullable; siblings stay with X."""
    for keyword in ("anyOf", "oneOf"):
        branches = prop.get(keyword)
        if not isinstance(branches, list) or len(branches) != 2:
            continue
        others = [b for b in branches if b != {"type": "null"}]
        if len(others) == 1 and isinstance(others[0], dict):
            rest = {key: value for key, value in prop.items() if key != keyword}
            if overlap := (set(rest) & set(others[0])) - {"description", "title", "default"}:
                raise SchemaRefused(
                    f"input {name!r} combines {keyword} with {', '.join(sorted(overlap))}, "
                    "which smolmesh cannot express"
                )
            return {**others[0], **rest}, True
    return prop, False


def _type_of(name: str, prop: dict[str, Any]) -> tuple[str, bool]:
    declared = prop.get("type")
    if declared is None:
        return _type_from_values(prop), False
    types = [declared] if isinstance(declared, str) else list(declared)
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    if not types:
        raise SchemaRefused(f"input {name!r} accepts only null")
    if len(types) > 1:
        raise SchemaRefused(f"input {name!r} accepts several types ({', '.join(types)}), which "
                            "smolmesh cannot express")  # fmt: skip
    return types[0], nullable


def _type_from_values(prop: dict[str, Any]) -> str:
    """The type of an enum or const without a declared type; ``any`` when they are mixed."""
    values = prop.get("enum", [prop["const"]] if "const" in prop else [])
    kinds = {_json_type(value) for value in values if value is not None}
    if kinds <= {"integer", "number"} and "number" in kinds:
        return "number"
    return kinds.pop() if len(kinds) == 1 else "any"


def _json_type(value: Any) -> str:
    for type_name, kind in (("boolean", bool), ("integer", int), ("number", float),
                            ("string", str), ("array", list), ("object", dict)):  # fmt: skip
        if isinstance(value, kind):
            return type_name
    return "any"


class _Inliner:
    """Replaces local ``$ref``s by what they point at, walking schema keywords only (an
    ``enum`` or ``default`` value that looks like a schema is data, not schema)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.expansions = 0

    def schema(self, node: Any, active: tuple[str, ...] = ()) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return self._ref(node, active)
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                raise SchemaRefused(
                    f"its inputSchema uses {keyword}, which smolmesh cannot express"
                )
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$defs", "definitions"):
                continue  # inlined where used
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.schema(sub, active) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.schema(sub, active) for sub in value]
            elif key in _SCHEMA_ONE:
                out[key] = (
                    [self.schema(sub, active) for sub in value]
                    if isinstance(value, list)
                    else self.schema(value, active)
                )
            else:
                out[key] = value
        return out

    def _ref(self, node: dict[str, Any], active: tuple[str, ...]) -> Any:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaRefused(f"its inputSchema uses $ref {clip(str(ref), 80)!r}, which is not "
                                "a local reference smolmesh can resolve")  # fmt: skip
        if ref in active:
            raise SchemaRefused(f"its inputSchema uses a recursive $ref ({clip(ref, 80)}), which "
                                "smolmesh cannot express")  # fmt: skip
        self.expansions += 1
        if self.expansions > MAX_REF_EXPANSIONS:
            raise SchemaRefused("its inputSchema expands to too many $refs")
        target: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaRefused(f"its inputSchema has a $ref that points nowhere "
                                    f"({clip(ref, 80)})")  # fmt: skip
            target = target[part]
        resolved = self.schema(target, (*active, ref))
        siblings = self.schema({k: v for k, v in node.items() if k != "$ref"}, active)
        if not siblings:
            return resolved
        if not isinstance(resolved, dict) or (
            set(siblings) & set(resolved) - {"description", "title", "default", "examples"}
        ):
            raise SchemaRefused(f"its inputSchema adds constraints beside $ref {clip(ref, 80)}, "
                                "which smolmesh cannot express")  # fmt: skip
        return {**resolved, **siblings}


def canonical(schema: Any) -> str:
    """A stable text of a schema, to notice that a restarted server changed a tool."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), default=str)
