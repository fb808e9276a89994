"""The Node.js A2A client (examples/clients/node/a2a.js) against a mesh agent served over A2A.

The client is the official A2A JS SDK (``@a2a-js/sdk``) over the gRPC binding; the agent
is the conformance agent (``services/a2a_conformance``), served in a process of its own
with its card over HTTP, as ``tests/test_a2a_serve.py`` serves it. From Node: the card, a
blocking send, a stream, get and list (a page at a time), a multi-turn task, a cancel, a
subscription after a dropped stream, and the ErrorInfo of a failed call.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import grpc
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc

from tests.mesh_setup import ROOT
from tests.support import free_port, serving
from tests.test_a2a_serve import SERVE, VERSION

A2A_JS = ROOT / "examples" / "clients" / "node" / "a2a.js"


def found(pattern: str, out: str) -> str:
    """The first group of the first line of ``out`` that matches ``pattern``."""
    match = re.search(pattern, out, re.M)
    assert match, f"no line matches {pattern!r} in:\n{out}"
    return match[1]


def task_states(address: str, *task_ids: str) -> list[int]:
    """What the service says of these tasks now (raw stub, not the client under test)."""
    with grpc.insecure_channel(address) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
        return [stub.GetTask(a2a.GetTaskRequest(id=task_id), metadata=VERSION, timeout=10)
                .status.state for task_id in task_ids]  # fmt: skip


def test_the_node_sdk_client_sends_streams_lists_cancels_and_resubscribes(tmp_path: Path) -> None:
    card = f"127.0.0.1:{free_port()}"
    log = tmp_path / "service.log"
    with serving(SERVE, tmp_path, card, log=log) as (address, _):
        done = subprocess.run(["node", str(A2A_JS), f"http://{card}"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout

        # a. The card, and a client on its GRPC interface, speaking A2A 1.0.
        assert (f"CARD name=a2a_conformance binding=GRPC url={address} version=1.0 "
                "streaming=true\n") in out  # fmt: skip

        # b, c. A blocking send, then a stream in the same context.
        sent = found(r"^SEND (\S+) TASK_STATE_COMPLETED ANSWER Hello from TCK$", out)
        events = re.findall(r"^EVENT (\w+) (.*)$", out, re.M)
        assert events[0] == ("task", "TASK_STATE_SUBMITTED")
        assert events[-1] == ("statusUpdate", "TASK_STATE_COMPLETED")
        assert ("artifactUpdate", "answer: Hello from TCK") in events
        streamed = found(rf"^STREAM (\S+) {len(events)} events, final TASK_STATE_COMPLETED$", out)

        # d. Get, and list the context one task a page, newest first.
        assert f"GOT {sent} TASK_STATE_COMPLETED ANSWER Hello from TCK HISTORY 1\n" in out
        assert f"LISTED 2 tasks in 2 pages: {streamed} {sent}\n" in out

        # e. The question paused the task; the answer, to the same task, completed it.
        asked = found(r"^ASKED (\S+) TASK_STATE_INPUT_REQUIRED QUESTION What should I do next\?$",
                      out)  # fmt: skip
        assert f"ANSWERED {asked} TASK_STATE_COMPLETED ANSWER Hello from TCK\n" in out

        # f. Cancelled at once, not after the task's 4 s of work.
        started = found(r"^STARTED (\S+) TASK_STATE_(?:SUBMITTED|WORKING)$", out)
        assert float(found(rf"^CANCELED {started} TASK_STATE_CANCELED in ([\d.]+) s$", out)) < 3

        # g. The dropped stream did not stop the task; the subscription saw it to its end.
        dropped = found(r"^DROPPED (\S+) after the first event \(task TASK_STATE_\w+\)$", out)
        rejoined = re.findall(r"^REJOINED (\w+) (.*)$", out, re.M)
        assert rejoined[0] == ("task", "TASK_STATE_WORKING")
        assert rejoined[-1] == ("statusUpdate", "TASK_STATE_COMPLETED")
        assert f"SUBSCRIBED {dropped} {len(rejoined)} events, final TASK_STATE_COMPLETED\n" in out

        # h. The failed call's status code and ErrorInfo, from grpc-status-details-bin.
        assert ("ERROR getTask NOT_FOUND reason=TASK_NOT_FOUND domain=a2a-protocol.org "
                "(TaskNotFoundError): ") in out  # fmt: skip

        # The service agrees with what the client saw.
        completed, canceled = a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_CANCELED
        assert task_states(address, asked, started, dropped) == [completed, canceled, completed]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
