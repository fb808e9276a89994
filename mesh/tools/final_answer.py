"""``final_answer``: the tool that ends a run.

Agents recognise it by name: a ``final_answer`` call, from a JSON tool call
or from code, stops the run with its argument as the result.
"""

from __future__ import annotations

from typing import Any

from mesh.tools.base import Tool

__all__ = ["FINAL_ANSWER", "FinalAnswerTool"]

FINAL_ANSWER = "final_answer"


class FinalAnswerTool(Tool):
    name = FINAL_ANSWER
    description = "Give the final answer to the task. Calling it ends the run."
    inputs = {"answer": {"type": "any", "description": "The final answer to the task."}}
    output_type = "any"

    def forward(self, answer: Any) -> Any:
        return answer
