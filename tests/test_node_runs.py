"""The Node.js runs client (examples/clients/node/runs.js) against a real service.

It starts a run in the background, drops its watch after a few events, finds the run
again, rejoins it at the next index, cancels it, holds a two-turn conversation and
decodes the ErrorDetail of a failed call from the rich status, all from Node. The
model is LiteLLM against a local OpenAI-compatible server whose every answer takes a
while, so that the run is still going when the client cancels it.
"""

from __future__ import annotations

import re
import subprocess

from mesh.host.run_record import RunStatus
from mesh.launcher import MeshProcesses
from mesh.models.replay_server import ReplayServer
from mesh.rpc.client import AgentClient
from tests.mesh_setup import ROOT
from tests.runs_setup import FIRST_TURN, LONG_TASK, SECOND_TURN

RUNS_JS = ROOT / "examples" / "clients" / "node" / "runs.js"


def found(pattern: str, out: str) -> str:
    """The first group of the first line of ``out`` that matches ``pattern``."""
    match = re.search(pattern, out, re.M)
    assert match, f"no line matches {pattern!r} in:\n{out}"
    return match[1]


def test_the_node_client_starts_finds_rejoins_and_cancels_a_run_and_holds_a_conversation(
    runs_service: MeshProcesses, runs_model: ReplayServer
) -> None:
    address = runs_service.addresses["math_specialist"][0]
    done = subprocess.run(["node", str(RUNS_JS), address, LONG_TASK, FIRST_TURN, SECOND_TURN],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "AGENT math_specialist (run records: true, sessions: true)" in out
    run_id = found(r"^STARTED (\S+) RUN_STATE_(QUEUED|RUNNING)$", out)

    # Watched three events, dropped the stream, found the run, rejoined at the fourth.
    assert re.findall(r"^EVENT (\d+) (\w+)", out, re.M) == [
        ("0", "run_started"), ("1", "model_output"), ("2", "code_action")]  # fmt: skip
    assert "DROPPED after event 2\n" in out
    assert f"GOT {run_id} RUN_STATE_RUNNING," in out
    assert f"LISTED {run_id} at position 0 of " in out  # newest first
    assert "REJOINED at event 3\n" in out

    # Cancelled while running; the second Cancel had nothing left to cancel.
    cancels = re.findall(r"^CANCEL (.*)$", out, re.M)
    assert cancels == ["cancelled=true state=RUN_STATE_RUNNING",
                       "cancelled=false state=RUN_STATE_CANCELLED"]  # fmt: skip
    watched = r"^WATCHED to event (\d+): run_finished, error run_cancelled \(retryable=false\)$"
    last = int(found(watched, out))
    assert f"ENDED {run_id} RUN_STATE_CANCELLED, error run_cancelled (retryable=false)" in out
    with AgentClient(address, agent="math_specialist") as client:  # what the service says
        record = client.get_run(run_id)
    assert record.status is RunStatus.CANCELLED and record.event_count == last + 1

    # The second turn's answer exists only in the first turn's conversation.
    assert "TURN 1 RUN_STATE_SUCCEEDED ANSWER noted: 7\n" in out
    assert "TURN 2 RUN_STATE_SUCCEEDED ANSWER 5040\n" in out
    found(r"^SESSION (node-\S+): 2 turn\(s\)$", out)
    assert re.findall(r"^SESSION TURN (.*)$", out, re.M) == [
        f"{FIRST_TURN} -> noted: 7", f"{SECOND_TURN} -> 5040"]  # fmt: skip
    assert len(found(r"^SESSION RUNS (.*) \(newest first\)$", out).split()) == 2
    asked = [[m["content"] for m in r["messages"]] for r in runs_model.requests]
    second = [messages for messages in asked if SECOND_TURN in messages]
    assert second and all(FIRST_TURN in messages for messages in second)  # the model saw turn 1

    # The failed call's ErrorDetail, decoded from grpc-status-details-bin.
    assert "ERROR GetRun NOT_FOUND reason=not_found retryable=false: no run 'no-such-run'" in out
