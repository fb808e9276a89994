"""A reference A2A agent for the tests, built with the A2A SDK alone (nothing of smolmesh).

    python tests/a2a_reference_server.py GRPC_PORT HTTP_PORT [--no-streaming]

It serves the A2A gRPC binding (``lf.a2a.v1.A2AService``) on loopback at GRPC_PORT and,
over HTTP at HTTP_PORT, its agent card at ``/.well-known/agent-card.json``; a card that
offers its JSON-RPC binding (at ``/jsonrpc``) alone under ``/json-rpc/``, one with no
interface anybody speaks under ``/no-grpc/``, a body that is no card under ``/garbage/``;
and ``/record``: what it saw (each call's method and its trace and authorization
metadata or headers, each task it ran or was asked to cancel), for the tests to check
what arrived. It is a stand-in for "any A2A
agent, any framework": tests must not learn anything about it through smolmesh.

The first word of the user's text picks what the task does:

    slow     works until cancelled (60 s)         fail    ends failed
    ask      asks a question (input-required)      reject  ends rejected
    data     answers with a data artifact          args    returns the data parts it got
    huge     answers with 1.5 MiB of text          other   echoes the text as an artifact
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import uvicorn
from a2a.helpers.proto_helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Message,
    Task,
    TaskState,
    TaskStatus,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

RECORD: list[dict[str, Any]] = []
"""What the server saw, in order (``/record`` shows it)."""


class ReferenceExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None and context.task_id and context.context_id
        text = context.get_user_input()
        RECORD.append({"kind": "execute", "task_id": context.task_id, "text": text[:200]})
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if context.current_task is None:  # the Task comes first: the client learns its id
            await event_queue.enqueue_event(Task(
                id=context.task_id, context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED), history=[message],
            ))  # fmt: skip
        word = (text.split() or [""])[0].lower().strip(",.!?")
        say = updater.new_agent_message
        if word == "slow":
            await updater.start_work(say([new_text_part("Working slowly.")]))
            await asyncio.sleep(60)
            await updater.complete()
        elif word == "fail":
            await updater.failed(say([new_text_part("The reference agent failed on purpose.")]))
        elif word == "reject":
            await updater.reject(say([new_text_part("I do not do that.")]))
        elif word == "ask":
            await updater.requires_input(say([new_text_part("Which city do you mean?")]))
        else:
            await updater.start_work(say([new_text_part("Thinking.")]))
            await updater.add_artifact(_answer(word, text, message), name="answer")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id
        RECORD.append({"kind": "cancel", "task_id": context.task_id})
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def _answer(word: str, text: str, message: Message) -> list[Any]:
    if word == "data":
        return [new_data_part({"answer": 42, "primes": [2, 3, 5], "note": "data"})]
    if word == "args":
        return [new_data_part(get_data_parts(message.parts))]
    if word == "huge":
        return [new_text_part("x" * (3 * 512 * 1024))]
    return [new_text_part(f"Echo: {text}")]


class Recorder(grpc.aio.ServerInterceptor):
    """Notes each call's method and the metadata the tests look for."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        metadata = dict(details.invocation_metadata or ())
        RECORD.append({"kind": "call", "method": details.method.rsplit("/", 1)[-1],
                       "traceparent": metadata.get("traceparent", ""),
                       "authorization": metadata.get("authorization", "")})  # fmt: skip
        return await continuation(details)


def record_http(app: Any) -> Any:
    """``app``, noting each JSON-RPC request's headers as ``Recorder`` notes gRPC calls'."""

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/jsonrpc":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            RECORD.append({"kind": "call", "method": "jsonrpc",
                           "traceparent": headers.get("traceparent", ""),
                           "authorization": headers.get("authorization", "")})  # fmt: skip
        await app(scope, receive, send)

    return recorded


def card(grpc_port: int, streaming: bool, *, binding: str = "GRPC", url: str = "") -> AgentCard:
    return AgentCard(
        name="Reference Echo Agent",
        description="An A2A agent built with the SDK alone, for the tests.",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url or f"127.0.0.1:{grpc_port}",
                                             protocol_binding=binding, protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(id="echo", name="Echo", description="Says back what it is told.",
                       tags=["echo"]),
            AgentSkill(id="wait", name="Wait", description="Works slowly until cancelled.",
                       tags=["slow"]),
        ],
    )  # fmt: skip


async def main(grpc_port: int, http_port: int, streaming: bool) -> None:
    agent_card = card(grpc_port, streaming)
    handler = DefaultRequestHandler(ReferenceExecutor(), InMemoryTaskStore(), agent_card)
    server = grpc.aio.server(interceptors=[Recorder()])
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    json_rpc = f"http://127.0.0.1:{http_port}/jsonrpc"

    async def record(request: Request) -> JSONResponse:
        return JSONResponse(RECORD)

    async def garbage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("<html>not a card</html>")

    routes = [
        *create_agent_card_routes(agent_card),
        *create_agent_card_routes(card(grpc_port, streaming, binding="SMOKE-SIGNALS"),
                                  card_url="/no-grpc/.well-known/agent-card.json"),
        *create_agent_card_routes(card(grpc_port, streaming, binding="JSONRPC", url=json_rpc),
                                  card_url="/json-rpc/.well-known/agent-card.json"),
        *create_jsonrpc_routes(handler, "/jsonrpc"),
        Route("/garbage/.well-known/agent-card.json", garbage),
        Route("/record", record),
    ]  # fmt: skip
    config = uvicorn.Config(record_http(Starlette(routes=routes)), host="127.0.0.1", port=http_port,
                            log_level="warning", lifespan="off")  # fmt: skip
    try:
        await uvicorn.Server(config).serve()  # until SIGTERM / SIGINT
    finally:
        await server.stop(0)
        await handler.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), "--no-streaming" not in sys.argv))
