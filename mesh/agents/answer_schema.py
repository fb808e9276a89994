"""``AnswerSchema``: the JSON Schema a structured agent's final answer must match.

Results that a program consumes (a lead's industry, a verdict) should be
data, not prose: an agent given an output schema has its final answer
checked, and a model that answers off-schema is told exactly what is wrong
(once) instead of its caller receiving something unusable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.errors import ConfigError
from mesh.text import clip

__all__ = ["AnswerSchema"]

MAX_PROBLEMS = 5


class AnswerSchema:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        import jsonschema  # type: ignore[import-untyped]  # only agents with a schema pay for it

        validator = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
        try:
            validator.check_schema(schema)
        except jsonschema.SchemaError as err:
            raise ConfigError(f"output schema: {clip(err.message, 300)}") from err
        self.schema = dict(schema)
        self._validator = validator(self.schema)

    def problems(self, answer: Any) -> str:
        """What is wrong with ``answer`` (empty when it fits), short enough for a prompt."""
        errors = sorted(self._validator.iter_errors(answer), key=lambda e: list(e.path))
        shown = [f"{_where(e)}: {clip(e.message, 200)}" for e in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            shown.append(f"and {len(errors) - MAX_PROBLEMS} more")
        return "; ".join(shown)


def _where(error: Any) -> str:
    return "answer" + "".join(f"[{p!r}]" for p in error.path)
