"""A stand-in for Jaeger in the compose test (Jaeger's image cannot be pulled here): an
OTLP/gRPC receiver on port 4317 that prints each span it receives as one JSON line, run in the
mesh's own image (which has grpc and the OTLP protos)."""

import json
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attribute(attributes: Any, key: str) -> str:
    return next((a.value.string_value for a in attributes if a.key == key), "")


class Printer(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = attribute(resource_spans.resource.attributes, "service.name")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    line = {"service": service, "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "run_id": attribute(span.attributes, "mesh.run_id")}  # fmt: skip
                    print(json.dumps(line), flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Printer(), server)
server.add_insecure_port("0.0.0.0:4317")
server.start()
server.wait_for_termination()
