"""AgentService's method handlers, made from the service descriptor.

The generated ``add_AgentServiceServicer_to_server`` lets gRPC decode each
request, and bytes that are not the request message then fail inside gRPC as
UNKNOWN, before any of our code runs. Registering the handlers here lets such
a request reach the servicer as a ``MalformedRequest``, which
``translate_errors`` refuses with INVALID_ARGUMENT like any other bad request.
Every handler is wrapped in ``translate_errors`` here, once: a servicer
method raises, and the caller gets the status and ErrorDetail it deserves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from mesh._proto import agent_pb2 as pb
from mesh.rpc.status import MalformedRequest, translate_errors

__all__ = ["add_agent_service", "add_service"]


def add_agent_service(servicer: Any, server: grpc.aio.Server) -> None:
    add_service(servicer, pb.DESCRIPTOR.services_by_name["AgentService"], server)


def add_service(servicer: Any, service: ServiceDescriptor, server: grpc.aio.Server) -> None:
    """Register ``servicer``'s methods for ``service`` (any service whose request and
    response classes the descriptor names), each wrapped in ``translate_errors``."""
    handlers = {}
    for method in service.methods:
        request = _message_class(method.input_type)
        response = _message_class(method.output_type)
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                else grpc.unary_unary_rpc_method_handler)  # fmt: skip
        handlers[method.name] = make(
            translate_errors(getattr(servicer, method.name)),
            request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _lenient(message: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as err:
            return MalformedRequest(message.DESCRIPTOR.full_name, str(err))

    return parse
