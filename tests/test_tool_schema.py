"""Building schemas from @tool functions and Tool classes, and validating calls."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from mesh import Tool, tool
from mesh.errors import ToolArgumentError, ToolDefinitionError, ToolExecutionError


@tool
def search_books(
    query: str,
    tags: list[str],
    limit: int = 10,
    min_rating: float | None = None,
    sort: Literal["newest", "oldest"] = "newest",
    strict: bool = False,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Search the catalogue of books.

    Args:
        query: Words to look for in titles and authors.
        tags (list[str]): Tags every result must have,
            written in lower case.
        limit: How many results at most.
        min_rating: Lowest average rating to include.
        sort: Result order.
        strict: Match whole words only.
        filters: Extra field filters.

    Returns:
        The matching books.
    """
    return [{"query": query, "tags": tags, "limit": limit, "sort": sort}]


def test_schema_from_hints_and_docstring() -> None:
    specs = {spec.name: spec for spec in search_books.input_specs}
    assert search_books.name == "search_books"
    assert search_books.description.startswith("Search the catalogue of books.")
    assert "Returns: The matching books." in search_books.description
    assert search_books.output_type == "array"
    assert (specs["query"].type, specs["query"].required) == ("string", True)
    assert specs["tags"].type == "array" and specs["tags"].items == "string"
    assert specs["tags"].description == "Tags every result must have, written in lower case."
    assert (specs["limit"].type, specs["limit"].required, specs["limit"].default) == (
        "integer",
        False,
        10,
    )
    assert specs["min_rating"].type == "number" and specs["min_rating"].nullable
    assert specs["sort"].enum == ("newest", "oldest") and specs["sort"].type == "string"
    assert specs["strict"].type == "boolean"
    assert specs["filters"].type == "object" and specs["filters"].nullable


def test_json_schema_for_native_tool_calling() -> None:
    schema = search_books.to_json_schema()
    params = schema["function"]["parameters"]
    assert schema["type"] == "function" and schema["function"]["name"] == "search_books"
    assert params["required"] == ["query", "tags"]
    assert params["properties"]["min_rating"]["type"] == ["number", "null"]
    assert params["properties"]["tags"]["items"] == {"type": "string"}
    assert params["properties"]["sort"]["enum"] == ["newest", "oldest"]
    assert params["additionalProperties"] is False


def test_tool_call_positional_and_keyword() -> None:
    assert search_books("dune", ["sf"], limit=3)[0]["limit"] == 3
    assert search_books(query="dune", tags=[])[0]["sort"] == "newest"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tags": []}, "missing required argument 'query'"),
        ({"query": "x", "tags": [], "colour": "red"}, "unknown argument 'colour'"),
        ({"query": 5, "tags": []}, "argument 'query': expected string, got integer"),
        ({"query": "x", "tags": [], "limit": 2.5}, "expected integer, got number"),
        ({"query": "x", "tags": [], "limit": True}, "expected integer, got boolean"),
        ({"query": "x", "tags": [], "limit": "3"}, "expected integer, got string"),
        ({"query": None, "tags": []}, "null is not allowed"),
        ({"query": "x", "tags": [1]}, "expected string, got integer"),
        ({"query": "x", "tags": [], "sort": "random"}, "'random' is not one of"),
        ({"query": "x", "tags": "sf"}, "expected array, got string"),
    ],
)
def test_validation_rejects_bad_calls(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolArgumentError, match="invalid call to search_books") as err:
        search_books.call(arguments)
    assert message in str(err.value)
    assert "Expected (query: string, tags: array" in str(err.value)


def test_validation_reports_every_problem_at_once() -> None:
    with pytest.raises(ToolArgumentError) as err:
        search_books.call({"limit": "x", "bogus": 1})
    text = str(err.value)
    assert "unknown argument 'bogus'" in text and "missing required argument 'query'" in text
    assert "argument 'limit'" in text


def test_validation_normalises() -> None:
    validated = search_books.validate({"query": "x", "tags": ("a",), "limit": 4.0, "min_rating": 4})
    assert validated["limit"] == 4 and isinstance(validated["limit"], int)
    assert validated["tags"] == ["a"] and validated["min_rating"] == 4
    assert validated["strict"] is False and validated["filters"] is None


def test_too_many_positional_arguments() -> None:
    with pytest.raises(ToolArgumentError, match="takes 7 argument"):
        search_books(*range(8))


def test_errors_inside_a_tool_become_tool_execution_errors() -> None:
    @tool
    def divide(a: float, b: float) -> float:
        """Divide a by b.

        Args:
            a: Numerator.
            b: Denominator.
        """
        return a / b

    with pytest.raises(ToolExecutionError, match="divide failed: ZeroDivisionError"):
        divide(1, 0)


def _no_docstring(x: int) -> int:
    return x


def _no_hint(x) -> int:  # type: ignore[no-untyped-def]
    """Do it.

    Args:
        x: A thing.
    """
    return 1


def _no_return_hint(x: int):  # type: ignore[no-untyped-def]
    """Do it.

    Args:
        x: A thing.
    """
    return x


def _undocumented_arg(x: int, y: int) -> int:
    """Do it.

    Args:
        x: A thing.
    """
    return x


def _star_args(*xs: int) -> int:
    """Do it.

    Args:
        xs: Things.
    """
    return 0


def _unsupported_type(x: complex) -> int:
    """Do it.

    Args:
        x: A thing.
    """
    return 0


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_no_docstring, "add a docstring"),
        (_no_hint, "argument 'x' needs a type hint"),
        (_no_return_hint, "add a return type hint"),
        (_undocumented_arg, "argument 'y' needs a description"),
        (_star_args, "name every argument"),
        (_unsupported_type, "has no schema equivalent"),
    ],
)
def test_decorator_refuses_ill_formed_functions(func: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        tool(func)


class Greeter(Tool):
    name = "greet"
    description = "Greet someone."
    inputs = {
        "who": {"type": "string", "description": "Who to greet."},
        "times": {"type": "integer", "description": "How often.", "nullable": True},
    }
    output_type = "string"

    def forward(self, who: str, times: int | None) -> str:
        return " ".join([f"hello {who}"] * (times or 1))


def test_tool_class() -> None:
    greeter = Greeter()
    assert greeter("ann", 2) == "hello ann hello ann"
    assert greeter(who="bo", times=None) == "hello bo"
    assert greeter.signature() == "greet(who: string, times: integer | null) -> string"
    with pytest.raises(ToolArgumentError, match="missing required argument 'times'"):
        greeter(who="x")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": "bad name"}, "must be a Python identifier"),
        ({"output_type": "audio"}, "output_type 'audio' is not one of"),  # image is one
        ({"inputs": {"who": {"type": "str", "description": "x"}}}, "type 'str' is not one of"),
        ({"inputs": {"who": {"type": "string"}}}, "needs 'type' and 'description'"),
        ({"inputs": {"other": {"type": "string", "description": "x"}}}, "forward() takes"),
        ({"description": ""}, "needs a description"),
    ],
)
def test_tool_class_definition_errors(attrs: dict[str, Any], message: str) -> None:
    broken = type("Broken", (Greeter,), attrs)
    with pytest.raises(ToolDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        broken()


def test_tool_class_without_forward() -> None:
    class NoForward(Tool):
        name = "nf"
        description = "Nothing."
        inputs: dict[str, Any] = {}
        output_type = "null"

    with pytest.raises(ToolDefinitionError, match="must implement forward"):
        NoForward()
