"""An OpenAI-compatible HTTP server that answers from a cassette.

Point ``LiteLLMModel(api_base=server.api_base)`` at it and the whole real
provider path runs (LiteLLM, the OpenAI SDK, HTTP, JSON parsing) with
deterministic answers and no network beyond loopback. Tests use it; so can
anyone who wants to exercise a client against recorded outputs.

A request with ``"stream": true`` is answered as OpenAI streams: server-sent
events, one chunk per piece of the text (the recorded ``deltas``, or word by
word), the tool calls, the finish reason, the usage when
``stream_options.include_usage`` asks for it, then ``[DONE]``.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mesh.errors import CassetteError, InvalidRequestError, ModelCallError
from mesh.models.openai_format import from_openai_message, to_openai_message
from mesh.models.replay import Cassette, CassetteEntry, conversation_key, split_words

__all__ = ["ReplayServer"]

HANG = b"<hang>"
"""What ``answer`` gives for a request that must hang (see ``inject_faults``)."""
_ERROR_STATUS = {"rate_limit": 429, "server": 500, "bad_request": 400, "timeout": 504}


class ReplayServer:
    """``with ReplayServer(cassette) as server: ... server.api_base ...``"""

    def __init__(
        self,
        cassette: Cassette,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.cassette = cassette
        self.latency_s = latency_s
        """How long each answer takes, like a model generating (a client may leave meanwhile)."""
        self.chunk_delay_s = chunk_delay_s
        """The pause between the chunks of a streamed answer, as a model generates them."""
        self.requests: list[dict[str, Any]] = []
        self.abandoned: list[float] = []
        """When (``time.monotonic()``) each hanging request was closed by its client."""
        self._faults: list[int | str | None] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _HTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def api_base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject_faults(self, *faults: int | str | None) -> None:
        """Answer the next requests with these faults, in order, before replaying again.

        None answers normally (to reach a later request); an int is an HTTP
        error status (429, 500, ...); ``"garbage"`` is a 200
        whose body is not JSON; ``"hang"`` answers nothing until the
        client gives up (noted in ``abandoned``), the server stops, or a
        minute passes: for client timeouts and cancellations.
        """
        with self._lock:
            self._faults.extend(faults)

    def _next_fault(self) -> int | str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def client_stays(self, connection: socket.socket, seconds: float) -> bool:
        """Wait ``seconds`` (less if the server stops); False if the client left meanwhile."""
        gives_up = time.monotonic() + seconds
        while not self._closing.is_set() and (left := gives_up - time.monotonic()) > 0:
            readable, _, _ = select.select([connection], [], [], min(left, 0.02))
            if readable and not _still_there(connection):
                with self._lock:
                    self.abandoned.append(time.monotonic())
                return False
        return True

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes | Stream]:
        with self._lock:
            self.requests.append(body)
        fault = self._next_fault()
        if fault == "garbage":
            return 200, b"{this is not json"
        if fault == "hang":
            return 0, HANG
        if isinstance(fault, int):
            return fault, _error(f"injected fault {fault}")
        try:
            messages = [from_openai_message(m) for m in body.get("messages", [])]
        except InvalidRequestError as err:  # e.g. an image part that is no image
            return 400, _error(err.message)
        try:
            entry = self.cassette.lookup(*conversation_key(messages))
            entry.replay()
        except CassetteError as err:
            return 404, _error(str(err))
        except ModelCallError as err:
            kind = (entry.error or {}).get("kind", "server")
            return _ERROR_STATUS.get(kind, 500), _error(str(err))
        completion = self._completion(body, entry)
        if body.get("stream"):
            usage = (body.get("stream_options") or {}).get("include_usage", False)
            return 200, Stream(list(_chunks(completion, entry, with_usage=usage)))
        return 200, completion

    def _completion(self, body: dict[str, Any], entry: CassetteEntry) -> dict[str, Any]:
        response = entry.replay()
        message = response.message
        usage = response.usage
        return {
            "id": f"chatcmpl-replay-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.model_id or body.get("model", "replay"),
            "choices": [
                {
                    "index": 0,
                    "message": to_openai_message(message),
                    "finish_reason": response.finish_reason
                    or ("tool_calls" if message.tool_calls else "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections are kept, as a provider's are
            wbufsize = -1  # headers and body leave in one segment (flushed after each request)
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, _error(f"no route {self.path}"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, _error("request body is not JSON"))
                    return
                status, payload = server.answer(body)
                wait = 60.0 if payload is HANG else server.latency_s
                if (wait and not server.client_stays(self.connection, wait)) or payload is HANG:
                    self.close_connection = True  # the client left, or a hang is over
                    return
                if isinstance(payload, Stream):
                    self._send_stream(payload)
                else:
                    self._send(status, payload)

            def _send_stream(self, stream: Stream) -> None:
                """Each chunk as a server-sent event, flushed as it goes (chunked encoding)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                try:
                    self.end_headers()
                    for event in [*map(json.dumps, stream.chunks), "[DONE]"]:
                        data = f"data: {event}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        if server.chunk_delay_s and not server.client_stays(
                            self.connection, server.chunk_delay_s
                        ):
                            self.close_connection = True  # the client left mid-stream
                            return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with server._lock:
                        server.abandoned.append(time.monotonic())
                    self.close_connection = True

            def _send(self, status: int, payload: dict[str, Any] | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. its timeout): nobody to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _HTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a stopped service's kept connection) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _still_there(connection: socket.socket) -> bool:
    """Whether a readable connection still has its client (not closed, not reset)."""
    try:
        return bool(connection.recv(1, socket.MSG_PEEK))
    except OSError:
        return False


class Stream:
    """An answer to send as a stream of chunks."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = chunks


def _chunks(
    completion: dict[str, Any], entry: CassetteEntry, *, with_usage: bool
) -> Iterator[dict[str, Any]]:
    """A completion as OpenAI streams it: the role, the text in pieces, the tool calls,
    the finish reason, and (asked for) the usage in a last chunk without choices."""
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        head = {k: completion[k] for k in ("id", "created", "model")}
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {**head, "object": "chat.completion.chunk", "choices": choices}

    yield chunk({"role": "assistant", "content": ""})
    for piece in entry.deltas or split_words(message.get("content") or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls") or ()):
        yield chunk({"tool_calls": [{"index": index, **call}]})
    yield chunk({}, choice["finish_reason"])
    if with_usage:
        head = {k: completion[k] for k in ("id", "created", "model")}
        yield {**head, "object": "chat.completion.chunk", "choices": [],
               "usage": completion["usage"]}  # fmt: skip


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "replay_error"}}
