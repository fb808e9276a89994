"""A misbehaving smolmesh.v1.AgentService, run as its own process by the fault tests.

    python -m tests.fault_server MODE CALLS_FILE

MODE is how RunStream misbehaves: ``garbage`` (bytes that are not a
RunStreamResponse), ``early-close`` (a run that starts, then a stream that
ends cleanly with no answer) or ``hang`` (never answers). Every RunStream
call appends a line to CALLS_FILE when it starts and when it ends, so a test
can count attempts (no double work) and see that the caller let go. Prints
``SERVING fault <port>`` once it listens.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from mesh._proto import agent_pb2 as pb

GARBAGE = b"\x0a\xff\xff\xff\xff\x0f not a protobuf"


async def main(mode: str, calls: Path) -> None:
    def note(line: str) -> None:
        with calls.open("a") as out:
            out.write(line + "\n")

    async def run_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        note("start")
        try:
            if mode == "garbage":
                yield GARBAGE
            elif mode == "early-close":
                started = pb.RunEvent(agent="research_specialist", run_id="r1",
                                      run_started=pb.RunStarted(task="x"))  # fmt: skip
                yield pb.RunStreamResponse(events=[started]).SerializeToString()
            else:
                await asyncio.sleep(3600)
        finally:
            note("end")

    handler = grpc.method_handlers_generic_handler(
        "smolmesh.v1.AgentService", {"RunStream": grpc.unary_stream_rpc_method_handler(run_stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"SERVING fault {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
