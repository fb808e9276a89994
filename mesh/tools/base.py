"""``Tool``: the smolagents-style tool class every tool in smolmesh is.

Subclass it with ``name``, ``description``, ``inputs``, ``output_type`` and a
``forward`` method, or let ``@tool`` build one from a typed function. A tool
instance is callable like a function (positional or keyword arguments); every
call is validated against the schema first, and any failure inside
``forward`` surfaces as a ``ToolExecutionError`` so an agent can turn it into
an observation instead of crashing.

A tool whose results come from outside (web pages, another program, another
service) is marked ``untrusted``: the model then reads its results fenced as
data, never as instructions (``mesh.tools.untrusted``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from mesh.errors import MeshError, ToolDefinitionError, ToolExecutionError
from mesh.tools.schema import (
    OUTPUT_TYPES,
    InputSpec,
    bind_arguments,
    json_schema,
    validate_arguments,
)

__all__ = ["Tool"]


class Tool:
    """Base class of tools; see the module docstring."""

    name: str
    description: str
    inputs: dict[str, dict[str, Any]]
    output_type: str
    untrusted: bool = False
    """Whether its results hold text from outside (web pages, another program): the model
    then reads them fenced, capped and marked as data (``mesh.tools.untrusted``). The code
    of a code agent still gets the value itself, to compute with."""

    def __init__(self, *, untrusted: bool | None = None) -> None:
        """``untrusted``: overrides the class's ``untrusted`` for this instance."""
        if untrusted is not None:
            self.untrusted = untrusted
        self._input_specs: tuple[InputSpec, ...] | None = None
        self.input_specs  # noqa: B018 - fail fast on an ill-formed definition

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """The parsed, checked ``inputs`` (computed once per instance)."""
        specs = getattr(self, "_input_specs", None)
        if specs is None:
            specs = self._check_definition()
            self._input_specs = specs
        return specs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(bind_arguments(self.name, self.input_specs, args, kwargs))

    def call(self, arguments: Mapping[str, Any]) -> Any:
        """Validate named arguments and run the tool."""
        validated = self.validate(arguments)
        try:
            return self.forward(**validated)
        except MeshError:
            raise
        except Exception as err:
            raise ToolExecutionError(f"{self.name} failed: {type(err).__name__}: {err}") from err

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return validate_arguments(self.name, self.input_specs, arguments)

    def to_json_schema(self) -> dict[str, Any]:
        """The OpenAI-style function spec that models with native tool calling read."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters_schema(),
            },
        }

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments object (a tool from elsewhere may keep its own)."""
        return json_schema(self.input_specs)

    def signature(self) -> str:
        """A Python-style signature line for prompts, e.g. ``factorial(n: integer) -> integer``."""
        params = []
        for spec in self.input_specs:
            text = f"{spec.name}: {spec.type}"
            if spec.nullable:
                text += " | null"
            if not spec.required:
                text += f" = {spec.default!r}"
            params.append(text)
        return f"{self.name}({', '.join(params)}) -> {self.output_type}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.signature()}>"

    def _check_definition(self) -> tuple[InputSpec, ...]:
        cls = type(self).__name__
        for attr in ("name", "description", "inputs", "output_type"):
            if not hasattr(self, attr):
                raise ToolDefinitionError(f"tool class {cls} must define {attr!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ToolDefinitionError(f"tool name {self.name!r} must be a Python identifier")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ToolDefinitionError(f"tool {self.name!r} needs a description")
        if self.output_type not in OUTPUT_TYPES:
            raise ToolDefinitionError(
                f"tool {self.name!r}: output_type {self.output_type!r} is not one of "
                f"{', '.join(OUTPUT_TYPES)}"
            )
        if not isinstance(self.inputs, Mapping):
            raise ToolDefinitionError(f"tool {self.name!r}: inputs must be a dict")
        specs = tuple(InputSpec.from_dict(name, spec) for name, spec in self.inputs.items())
        self._check_forward_signature(specs)
        return specs

    def _check_forward_signature(self, specs: tuple[InputSpec, ...]) -> None:
        if type(self).forward is Tool.forward:
            raise ToolDefinitionError(f"tool {self.name!r} must implement forward()")
        forward = self.forward
        bound = getattr(forward, "__func__", None)  # a method: its function, self skipped
        names = _forward_parameters(forward if bound is None else bound, bound is not None)
        if names is None:
            return
        expected = [spec.name for spec in specs]
        if sorted(names) != sorted(expected):
            raise ToolDefinitionError(
                f"tool {self.name!r}: forward() takes {names} but inputs declare {expected}"
            )


@functools.lru_cache(maxsize=1024)
def _forward_parameters(forward: Callable[..., Any], method: bool) -> tuple[str, ...] | None:
    """The names ``forward`` takes (a ``method``: after self), None if it takes ``**kwargs``.
    Kept per function: tools built at every step (a step's run_parallel, a managed agent's
    tool) would read the same signature again each time."""
    params = list(inspect.signature(forward).parameters.values())[1 if method else 0 :]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)
