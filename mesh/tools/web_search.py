"""``DuckDuckGoTool``: web search behind a small, injectable backend.

The tool owns formatting, limits and error messages; the backend only turns
a query into results. The default backend uses ``ddgs`` with one engine and
a timeout (its "auto" mode can take several timeouts to fail); tests inject
their own backend and never touch the network.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from mesh.errors import ToolExecutionError
from mesh.text import clip
from mesh.tools.base import Tool
from mesh.tools.untrusted import Fenced, fence

__all__ = ["CorpusBackend", "DDGSBackend", "DuckDuckGoTool", "SearchBackend", "SearchResult"]


class SearchResult(TypedDict):
    title: str
    href: str
    body: str


SearchBackend = Callable[[str, int], list[SearchResult]]


class DDGSBackend:
    """Search DuckDuckGo through ``ddgs`` (imported on first use)."""

    def __init__(self, timeout_s: float = 5.0, engine: str = "duckduckgo") -> None:
        self.timeout_s = timeout_s
        self.engine = engine

    def __call__(self, query: str, max_results: int) -> list[SearchResult]:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, TimeoutException

        try:
            raw: list[dict[str, Any]] = DDGS(timeout=int(max(1, self.timeout_s))).text(
                query, max_results=max_results, backend=self.engine
            )
        except TimeoutException as err:
            raise ToolExecutionError(
                f"web search timed out after {self.timeout_s:g} s: {err}", retryable=True
            ) from err
        except DDGSException as err:
            raise ToolExecutionError(
                f"web search failed; the network may be unreachable: {err}", retryable=True
            ) from err
        return [
            SearchResult(title=r.get("title", ""), href=r.get("href", ""), body=r.get("body", ""))
            for r in raw
        ]


class CorpusBackend:
    """Search a local JSONL corpus of {"title", "href", "body"} documents.

    Replays use it: a recorded run must be reproducible offline, and live
    search results would make it diverge from its recording.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        self.documents = [_result(json.loads(line)) for line in lines if line.strip()]

    def __call__(self, query: str, max_results: int) -> list[SearchResult]:
        words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 2}
        scored: list[tuple[int, int, SearchResult]] = []
        for document in self.documents:
            text = f"{document['title']} {document['body']}".lower()
            score = sum(1 for word in words if word in text)
            if score:
                scored.append((-score, len(scored), document))
        return [document for _, _, document in sorted(scored)[:max_results]]


class DuckDuckGoTool(Tool):
    name = "web_search"
    description = "Search the web. Returns the top results with title, link and a snippet."
    inputs = {
        "query": {"type": "string", "description": "What to search for."},
        "max_results": {
            "type": "integer",
            "description": "How many results to return (1-10).",
            "default": 5,
        },
    }
    output_type = "string"
    untrusted = True

    def __init__(self, backend: SearchBackend | None = None, max_query_chars: int = 500) -> None:
        self.backend: SearchBackend = backend or DDGSBackend()
        self.max_query_chars = max_query_chars
        super().__init__()

    def forward(self, query: str, max_results: int = 5) -> str:
        query = query.strip()
        if not query:
            raise ValueError("query is empty")
        if len(query) > self.max_query_chars:
            raise ValueError(f"query is longer than {self.max_query_chars} characters")
        if not 1 <= max_results <= 10:
            raise ValueError(f"max_results must be between 1 and 10 (got {max_results})")
        results = self.backend(query, max_results)[:max_results]
        if not results:
            return f"No results for {query!r}."
        return fenced(results, self.name)


MAX_TITLE_CHARS = 200
MAX_URL_CHARS = 500
MAX_SNIPPET_CHARS = 800


def fenced(results: list[SearchResult], tool: str) -> Fenced:
    """Results as the model reads them: fenced as untrusted (``mesh.tools.untrusted``), each
    field capped and on one line, so that page text can neither flood the prompt nor pose
    as another result (prompt injection lives in web pages). Fenced here, in the result
    itself, because code agents print it: the text they read is fenced too."""
    lines = []
    for i, result in enumerate(results, 1):
        title = clip(result["title"], MAX_TITLE_CHARS, one_line=True)
        url = clip(result["href"], MAX_URL_CHARS, one_line=True)
        body = clip(result["body"], MAX_SNIPPET_CHARS, one_line=True)
        lines.append(f"{i}. [{title}]({url})\n   {body}")
    return fence("\n".join(lines), tool, what="text from web pages")


def _result(data: dict[str, Any]) -> SearchResult:
    return SearchResult(title=str(data["title"]), href=str(data["href"]), body=str(data["body"]))
