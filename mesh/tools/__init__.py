"""Tools: the ``Tool`` class, the ``@tool`` decorator, schemas and the built-in tools."""

from mesh.tools.base import Tool
from mesh.tools.decorator import tool
from mesh.tools.final_answer import FINAL_ANSWER, FinalAnswerTool
from mesh.tools.math_tools import PrimeTool, celsius_to_fahrenheit, factorial
from mesh.tools.memo import MemoTool
from mesh.tools.schema import InputSpec
from mesh.tools.web_search import (
    CorpusBackend,
    DDGSBackend,
    DuckDuckGoTool,
    SearchBackend,
    SearchResult,
)

__all__ = [
    "FINAL_ANSWER",
    "CorpusBackend",
    "DDGSBackend",
    "DuckDuckGoTool",
    "FinalAnswerTool",
    "InputSpec",
    "MemoTool",
    "PrimeTool",
    "SearchBackend",
    "SearchResult",
    "Tool",
    "celsius_to_fahrenheit",
    "factorial",
    "tool",
]
