"""``console_app``: the web console of a mesh, as a Starlette app.

The page (``static/``: its HTML, script and styles, bundled: nothing comes from
elsewhere) talks to the JSON API below, which talks to the mesh through
``MeshView``. Each API handler checks what it was given (``params``), makes its
calls in threads (``AgentClient`` blocks), and answers JSON; errors are
``{"error": message}`` with a status (``responses``). ``ConsoleGuard`` stands in
front of everything (token, CSRF, security headers).

    GET  /api/session                          the CSRF token and what the page shows first
    GET  /api/agents                           each agent: card, health, replicas, runs in flight
    GET  /api/runs?agent&state&since&limit     recent runs, newest first
    POST /api/runs                             start a task {"agent", "task", "session_id"?}
    GET  /api/runs/{agent}/{run_id}            one run
    GET  /api/runs/{agent}/{run_id}/events     its events, then the run: Server-Sent Events
    POST /api/runs/{agent}/{run_id}/cancel     cancel it and every run it delegated
    GET  /api/audit/{run_id}                   its audit entries across the mesh's services
    GET  /api/traces/{trace_id}                a trace's spans from the local trace files
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import mesh.console.params as params
from mesh.config import MeshConfig
from mesh.console.event_feed import EventFeed, EventFeeds
from mesh.console.events_json import end_message, event_message
from mesh.console.mesh_view import MeshView
from mesh.console.responses import error_response, internal_error, mesh_error_response
from mesh.console.runs_json import bounded, run_json
from mesh.console.security import LOOPBACK_HOSTS, ConsoleGuard, check_token
from mesh.errors import ConfigError, InvalidRequestError, MeshError, NotFoundError
from mesh.host.audit import default_audit_dir, read_run
from mesh.host.run_record import RunRecord
from mesh.rpc.client import EventStream
from mesh.telemetry import default_trace_dir
from mesh.telemetry.trace_file import SpanRecord, iter_spans

__all__ = ["STATIC_DIR", "console_app"]

STATIC_DIR = Path(__file__).parent / "static"
MAX_AUDIT_RECORDS = 5000
MAX_SPANS = 5000
MAX_STREAMS = 64
"""Event streams open at once (each holds a thread and a gRPC stream)."""
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

Handler = Callable[[Request], Awaitable[Response]]


def console_app(
    config: MeshConfig,
    *,
    token: str | None,
    jaeger_url: str | None,
    addresses: Mapping[str, Sequence[str]] | None = None,
    allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS,
    static_dir: Path = STATIC_DIR,
    audit_dir: Path | None = None,
    trace_dir: Path | None = None,
    keepalive_s: float = 15.0,
) -> Starlette:
    """The console of the mesh ``config`` describes, its agents at ``addresses`` where given.

    ``token``: required of every request when set (``security``); ``allowed_hosts``: the
    names it answers to (None: any, which needs a token). The audit and trace directories
    default to those the services write (``$MESH_AUDIT_DIR``, ``$MESH_TRACE_DIR``).
    """
    if token is not None:
        check_token(token)
    elif allowed_hosts is None:
        raise ConfigError("a console that answers to any host name needs a token")
    jaeger = params.jaeger_url(jaeger_url)
    view = MeshView(config, addresses)
    feeds = EventFeeds(MAX_STREAMS)
    csrf = secrets.token_urlsafe(32)
    api = _Api(view, feeds, static_dir, audit_dir or default_audit_dir(),
               trace_dir or default_trace_dir(), keepalive_s)  # fmt: skip
    session = {"csrf": csrf, "jaeger_url": jaeger, "entry": config.entry, "task": config.task,
               "agents": view.agents}  # fmt: skip

    async def get_session(request: Request) -> Response:
        return JSONResponse(session)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        feeds.close_all()
        view.close()

    routes = [
        Route("/", _json_errors(api.index)),
        Route("/static/{name}", _json_errors(api.static)),
        Route("/api/session", _json_errors(get_session)),
        Route("/api/agents", _json_errors(api.agents)),
        Route("/api/runs", _json_errors(api.runs)),
        Route("/api/runs", _json_errors(api.start), methods=["POST"]),
        Route("/api/runs/{agent}/{run_id}", _json_errors(api.run)),
        Route("/api/runs/{agent}/{run_id}/events", _json_errors(api.events)),
        Route("/api/runs/{agent}/{run_id}/cancel", _json_errors(api.cancel), methods=["POST"]),
        Route("/api/audit/{run_id}", _json_errors(api.audit)),
        Route("/api/traces/{trace_id}", _json_errors(api.trace)),
    ]
    guard = Middleware(ConsoleGuard, token=token, csrf=csrf, allowed_hosts=allowed_hosts)
    app = Starlette(routes=routes, middleware=[guard], lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})  # fmt: skip
    app.state.feeds = feeds
    return app


def _json_errors(handler: Handler) -> Handler:
    """Every API error as JSON: the mesh's mapped to their status, anything else a 500
    whose traceback stays in the log."""

    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except MeshError as err:
            return mesh_error_response(err)
        except Exception as err:
            return internal_error(err)

    return answered


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as JSON too."""
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, exc.detail)
    response.headers.update(exc.headers or {})
    return response


class _Api:
    def __init__(self, view: MeshView, feeds: EventFeeds, static_dir: Path, audit_dir: Path,
                 trace_dir: Path, keepalive_s: float) -> None:  # fmt: skip
        self.view = view
        self.feeds = feeds
        self.static_dir = static_dir
        self.audit_dir = audit_dir
        self.trace_dir = trace_dir
        self.keepalive_s = keepalive_s

    # The page -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return self._file("index.html")

    async def static(self, request: Request) -> Response:
        return self._file(request.path_params["name"])

    def _file(self, name: str) -> Response:
        """A file of the page's directory, itself (no subdirectory, no hidden file), of a
        type the page uses."""
        kind = STATIC_TYPES.get(Path(name).suffix.lower())
        path = self.static_dir / name
        if kind is None or not _STATIC_NAME.fullmatch(name) or not path.is_file():
            return error_response(404, "no such file")
        return FileResponse(path, media_type=kind, headers={"cache-control": "no-cache"})

    # Agents and runs ------------------------------------------------------------------

    async def agents(self, request: Request) -> Response:
        summaries = await asyncio.gather(
            *(asyncio.to_thread(self.view.agent_summary, name) for name in self.view.agents)
        )
        return JSONResponse({"agents": summaries})

    async def runs(self, request: Request) -> Response:
        """One agent's runs, or every agent's merged (newest first), with the agents that
        could not say theirs (``errors``: name -> why) rather than a failure."""
        listing = params.run_listing(request.query_params)
        if listing.agent:
            runs = await asyncio.to_thread(self.view.runs, listing.agent, listing.where,
                                           listing.limit)  # fmt: skip
            return JSONResponse({"runs": [run_json(r) for r in runs], "errors": {}})
        found = await asyncio.gather(*(self._runs_of(name, listing) for name in self.view.agents))
        merged = itertools.chain.from_iterable(runs for runs, _ in found)
        newest = sorted(merged, key=lambda r: r.created, reverse=True)[: listing.limit]
        errors = {name: error for name, (_, error) in zip(self.view.agents, found, strict=True)
                  if error is not None}  # fmt: skip
        return JSONResponse({"runs": [run_json(r) for r in newest], "errors": errors})

    async def _runs_of(self, agent: str, listing: params.RunListing
                       ) -> tuple[list[RunRecord], str | None]:  # fmt: skip
        try:
            return await asyncio.to_thread(self.view.runs, agent, listing.where,
                                           listing.limit), None  # fmt: skip
        except MeshError as err:
            return [], err.message

    async def run(self, request: Request) -> Response:
        agent, run_id = self._run_path(request)
        return JSONResponse(run_json(await asyncio.to_thread(self.view.get_run, agent, run_id)))

    async def start(self, request: Request) -> Response:
        order = params.start_order(await _body(request))
        record = await asyncio.to_thread(self.view.start_run, order.agent, order.task,
                                         order.session_id)  # fmt: skip
        return JSONResponse({"agent": order.agent, "run_id": record.run_id}, status_code=201)

    async def cancel(self, request: Request) -> Response:
        agent, run_id = self._run_path(request)
        cancelled, state = await asyncio.to_thread(self.view.cancel, agent, run_id)
        return JSONResponse({"cancelled": cancelled, "state": state.value if state else None})

    async def events(self, request: Request) -> Response:
        agent, run_id = self._run_path(request)
        start = params.event_start(request.query_params, request.headers.get("last-event-id"))
        if len(self.feeds) >= self.feeds.limit:
            return error_response(503, "too many event streams are open; close some pages")
        await asyncio.to_thread(self.view.get_run, agent, run_id)  # 404 or 502 before 200
        stream = self.view.watch(agent, run_id, start)
        feed = EventFeed(_messages(self.view, stream, agent, run_id), stream.cancel,
                         keepalive_s=self.keepalive_s)  # fmt: skip
        if not self.feeds.add(feed):
            stream.cancel()
            return error_response(503, "too many event streams are open; close some pages")
        return _EventStreamResponse(feed, self.feeds)

    def _run_path(self, request: Request) -> tuple[str, str]:
        agent = request.path_params["agent"]
        self.view.client(agent)
        return agent, params.run_id(request.path_params["run_id"])

    # The records ----------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        run_id = params.run_id(request.path_params["run_id"])
        entries = await asyncio.to_thread(read_run, self.audit_dir, run_id)
        return JSONResponse({"records": entries[:MAX_AUDIT_RECORDS],
                             "truncated": len(entries) > MAX_AUDIT_RECORDS})  # fmt: skip

    async def trace(self, request: Request) -> Response:
        trace_id = params.trace_id(request.path_params["trace_id"])
        spans = await asyncio.to_thread(_spans, self.trace_dir, trace_id)
        if not spans:
            raise NotFoundError(f"no spans of trace {trace_id} under {self.trace_dir}")
        return JSONResponse({"spans": [_span_json(s) for s in spans]})


def _messages(view: MeshView, stream: EventStream, agent: str, run_id: str) -> Iterator[str]:
    """The run's events as Server-Sent Events, then the run as it ended."""
    for index, event in stream.indexed():
        yield event_message(index, event)
    yield end_message(view.get_run(agent, run_id))


class _EventStreamResponse(StreamingResponse):
    """``text/event-stream`` from a feed, which is closed however the response ends (the
    run's end, the client gone, the console stopping)."""

    def __init__(self, feed: EventFeed, feeds: EventFeeds) -> None:
        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        super().__init__(feed.chunks(), media_type="text/event-stream", headers=headers)
        self.feed = feed
        self.feeds = feeds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.feeds.remove(self.feed)


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > params.MAX_BODY_BYTES:
            raise InvalidRequestError(f"the body is over {params.MAX_BODY_BYTES} bytes")
    return bytes(body)


def _spans(directory: Path, trace_id: str) -> list[SpanRecord]:
    spans = list(itertools.islice(iter_spans(directory, trace_id), MAX_SPANS))
    return sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)


def _span_json(span: SpanRecord) -> dict[str, Any]:
    return {"trace_id": span.trace_id, "span_id": span.span_id, "parent_id": span.parent_id,
            "name": span.name, "service": span.service, "start_ns": span.start_ns,
            "end_ns": span.end_ns, "duration_ms": span.duration_ms, "error": span.error,
            "attributes": bounded(span.attributes)}  # fmt: skip
