"""What a request to the console may say, checked before anything reaches the mesh.

Each reader raises ``InvalidRequestError`` (400) with a message that names the
parameter and never repeats a long value whole; an agent the mesh does not have
is the view's ``NotFoundError`` (404).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mesh import untrusted_json
from mesh.errors import ConfigError, InvalidRequestError
from mesh.host.run_record import RunFilter, RunStatus
from mesh.host.served_agent import MAX_TASK_CHARS
from mesh.rpc.identifiers import check_identifier
from mesh.text import clip

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_LISTED_RUNS",
    "RunListing",
    "StartOrder",
    "event_start",
    "jaeger_url",
    "run_id",
    "run_listing",
    "start_order",
    "trace_id",
]

MAX_LISTED_RUNS = 200
DEFAULT_LISTED_RUNS = 50
MAX_BODY_BYTES = 4 * MAX_TASK_CHARS + 4096
"""A start request: the longest task (in UTF-8, at worst) and the rest."""
MAX_INDEX = 2**31
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_STATES = ", ".join(s.value for s in RunStatus)


@dataclass(frozen=True)
class RunListing:
    agent: str
    """"" for every agent."""
    where: RunFilter
    limit: int


@dataclass(frozen=True)
class StartOrder:
    agent: str
    task: str
    session_id: str


def run_id(value: str, field: str = "run_id") -> str:
    if not value:
        raise InvalidRequestError(f"{field} is required")
    return check_identifier(value, field)


def trace_id(value: str) -> str:
    """A W3C trace id: 32 hex digits (any case; lower case is how trace files hold it)."""
    if not _TRACE_ID.fullmatch(value.lower()):
        raise InvalidRequestError(f"trace_id must be 32 hex digits, got {clip(repr(value), 40)}")
    return value.lower()


def run_listing(query: Mapping[str, str]) -> RunListing:
    """``?agent=NAME&state=running[,queued]&since=UNIX&limit=50``, each optional."""
    statuses = set()
    for state in filter(None, query.get("state", "").split(",")):
        try:
            statuses.add(RunStatus(state.strip()))
        except ValueError:
            raise InvalidRequestError(f"state must be one of {_STATES}, got "
                                      f"{clip(repr(state), 40)}") from None  # fmt: skip
    since = _number(query, "since", float, 0, math.inf)
    limit = _number(query, "limit", int, 1, MAX_LISTED_RUNS)
    where = RunFilter(statuses=frozenset(statuses), created_after=since)
    return RunListing(query.get("agent", ""), where,
                      DEFAULT_LISTED_RUNS if limit is None else int(limit))  # fmt: skip


def event_start(query: Mapping[str, str], last_event_id: str | None) -> int:
    """The index to watch from: after ``Last-Event-ID`` (a reconnecting EventSource sends
    the last it got), else ``?from=N``, else the first."""
    if last_event_id is not None and last_event_id.strip():
        last = _number({"Last-Event-ID": last_event_id.strip()}, "Last-Event-ID", int, -1,
                       MAX_INDEX)  # fmt: skip
        return int(last or 0) + 1
    start = _number(query, "from", int, 0, MAX_INDEX)
    return int(start or 0)


def _number(query: Mapping[str, str], name: str, kind: type[float] | type[int], low: float,
            high: float) -> float | None:  # fmt: skip
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number, got {clip(repr(text), 40)}") from None
    if not (low <= value <= high) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def start_order(body: bytes) -> StartOrder:
    """``{"agent": NAME, "task": TEXT, "session_id": ID?}``."""
    try:
        data: Any = untrusted_json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidRequestError(f"the body is not JSON: {clip(str(err), 100)}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError('the body must be a JSON object: {"agent", "task", '
                                  '"session_id"?}')  # fmt: skip
    unknown = set(data) - {"agent", "task", "session_id"}
    if unknown:
        raise InvalidRequestError(f"unknown fields: {clip(', '.join(sorted(unknown)), 100)}")
    agent, task, session = data.get("agent"), data.get("task"), data.get("session_id") or ""
    if not isinstance(agent, str) or not agent:
        raise InvalidRequestError("agent must be the name of an agent of the mesh")
    if not isinstance(task, str) or not task.strip():
        raise InvalidRequestError("task must be a non-empty string")
    if len(task) > MAX_TASK_CHARS:
        raise InvalidRequestError(f"task is longer than {MAX_TASK_CHARS} characters")
    if not isinstance(session, str):
        raise InvalidRequestError("session_id must be a string")
    return StartOrder(agent, task, check_identifier(session, "session_id"))


def jaeger_url(value: str | None) -> str | None:
    """The base URL of a Jaeger UI (the page links to ``URL/trace/ID``), or None."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"the Jaeger URL must be http(s)://host[:port][/path], got "
                          f"{clip(repr(value), 80)}")  # fmt: skip
    return value.rstrip("/")
