"""``final_answer``: the tool that ends a run.

Agents recognise it by name: a ``final_answer`` call, from a JSON tool call
or from code, stops the run with its argument as the result. An agent with an
output schema shows it here, in the description and as the ``answer``
parameter's JSON Schema, so the model knows the shape before it answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mesh.text import clip
from mesh.tools.base import Tool

__all__ = ["FINAL_ANSWER", "FinalAnswerTool"]

FINAL_ANSWER = "final_answer"
MAX_SCHEMA_IN_DESCRIPTION = 4000


class FinalAnswerTool(Tool):
    name = FINAL_ANSWER
    description = "Give the final answer to the task. Calling it ends the run."
    inputs = {"answer": {"type": "any", "description": "The final answer to the task."}}
    output_type = "any"

    def __init__(self, output_schema: Mapping[str, Any] | None = None) -> None:
        self.output_schema = dict(output_schema) if output_schema is not None else None
        if self.output_schema is not None:
            shown = clip(json.dumps(self.output_schema, separators=(",", ":")),
                         MAX_SCHEMA_IN_DESCRIPTION)  # fmt: skip
            self.description = (f"{FinalAnswerTool.description} The answer must be JSON "
                                f"matching this JSON Schema: {shown}")  # fmt: skip
        super().__init__()

    def forward(self, answer: Any) -> Any:
        return answer

    def parameters_schema(self) -> dict[str, Any]:
        parameters = super().parameters_schema()
        if self.output_schema is not None:
            parameters["properties"]["answer"] = {**self.output_schema,
                                                  "description": "The final answer."}  # fmt: skip
        return parameters
