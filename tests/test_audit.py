"""The audit log: every model and tool call of a run, across services, with secrets redacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents import CodeAgent
from mesh.agents.events import ModelOutput, RunStarted, ToolCallStarted
from mesh.host.audit import AuditLog, full_prompts, read_run
from mesh.launcher import MeshProcesses
from mesh.models import Cassette, ChatMessage, ModelResponse, ReplayModel, TokenUsage
from mesh.project import load_mesh_config
from mesh.telemetry.redact import redact, shape
from tests.mesh_setup import SEED_TASK
from tests.support import code


def read_run_ids(directory: Path) -> set[str]:
    return {json.loads(line)["run_id"] for p in directory.iterdir() for line in p.open()}


SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def test_secret_patterns_are_redacted() -> None:
    text = (f"key {SECRET}; Authorization: Bearer abc.def-ghi_jkl012345; "
            "AKIAABCDEFGHIJKLMNOP; ghp_" + "a" * 36 + "; fine words stay")  # fmt: skip
    cleaned = redact(text)
    assert "sk-proj" not in cleaned and "abc.def" not in cleaned and "AKIA" not in cleaned
    assert "ghp_" not in cleaned and cleaned.count("[REDACTED]") == 4
    assert cleaned.endswith("fine words stay")
    assert shape("x" * 5000, "truncated").endswith("... [1000 more characters]")  # type: ignore[union-attr]
    assert shape("text", "off") is None and shape("text", "full") == "text"


def test_prompts_in_the_audit_log_are_redacted_and_the_file_rotates(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "agent.jsonl", max_bytes=1000, backups=2)
    prompt = (ChatMessage("system", "be useful"), ChatMessage("user", f"my key is {SECRET}"))
    for step in range(1, 21):  # about 400 bytes each: several rotations, two backups kept
        log.record(ModelOutput(agent="a", run_id=f"r{step}", step=1, text=f"answer {step}",
                               usage=TokenUsage(10, 2), model_id="m", prompt=prompt))  # fmt: skip
    log.record(RunStarted(agent="a", run_id="child", parent_run_id="x", depth=1, task="t"))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.jsonl", "agent.jsonl.1", "agent.jsonl.2"]
    text = "".join(p.read_text() for p in tmp_path.iterdir())
    assert SECRET not in text and "my key is [REDACTED]" in text
    assert '"run_id": "child"' not in text  # a delegated run is audited where it ran


def test_a_model_call_records_only_the_new_messages_and_every_prompt_can_be_rebuilt(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "agent.jsonl")
    agent = CodeAgent([], ReplayModel(Cassette.from_responses(
        [ModelResponse(ChatMessage("assistant", code(f"print({n})")), TokenUsage(10, 2))
         for n in range(11)] + [ModelResponse(ChatMessage("assistant", code("final_answer(1)")),
                                              TokenUsage(10, 2))], task="Count.")),
        name="counter")  # fmt: skip
    seen = []
    for event in agent.run("Count.", stream=True):
        log.record(event)
        if isinstance(event, ModelOutput):
            seen.append([{"role": m.role, "content": shape(m.content)} for m in event.prompt])
    entries = read_run(tmp_path, next(iter(read_run_ids(tmp_path))))
    calls = [e for e in entries if e["event"] == "ModelOutput"]
    assert len(calls) == 12
    assert calls[0]["prompt_kept"] == 0 and len(calls[0]["prompt"]) == 2  # system, task
    assert all(c["prompt_kept"] >= 2 and len(c["prompt"]) <= 2 for c in calls[1:])
    assert list(full_prompts(entries)) == seen  # what the model read, call by call
    sizes = [len(json.dumps(c)) for c in calls[1:]]
    assert max(sizes) < 2 * min(sizes)  # the tenth call costs what the first did


def test_an_entry_too_long_for_the_file_is_clipped_and_still_found(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "agent.jsonl", max_bytes=4096, backups=1)
    log.record(RunStarted(agent="a", run_id="r1", task="t"))
    log.record(ToolCallStarted(agent="a", run_id="r1", step=1, name="memo", call_id="c1",
                               arguments={"value": "v" * 100_000}))  # fmt: skip
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    started, call = read_run(tmp_path, "r1")
    assert started["event"] == "RunStarted"
    assert call["event"] == "ToolCallStarted" and call["tool"] == "memo"
    assert call["arguments"]["value"].endswith("more characters]")


def test_a_mesh_run_is_audited_across_services(mesh_dir: Path, tmp_path: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_AUDIT_DIR": str(tmp_path / "audit")}
    only = ("manager", "research_specialist", "math_specialist")
    with MeshProcesses(config, env=env, only=only, log_dir=tmp_path / "logs") as mesh:
        channel = grpc.insecure_channel(mesh.addresses["manager"][0])
        agent_pb2_grpc.AgentServiceStub(channel).Run(  # type: ignore[no-untyped-call]
            pb.RunRequest(task=SEED_TASK, run_id="audited-1"), timeout=60
        )
    entries = read_run(tmp_path / "audit", "audited-1")
    models = [e for e in entries if e["event"] == "ModelOutput"]
    assert [e["agent"] for e in models] == ["manager"] + ["research_specialist"] * 3 + [
        "manager"
    ] + ["math_specialist"] * 2 + ["manager"]
    first = models[0]
    assert first["model_id"] == "gpt-4o-mini" and first["input_tokens"] == 1480
    assert first["cached"] is False
    assert first["prompt"][1] == {"role": "user", "content": SEED_TASK}
    assert "research_specialist(task=" in first["output"]
    tools = [e for e in entries if e["event"] == "ToolCallFinished"]
    memo = next(e for e in tools if e["tool"] == "memo")
    assert memo["success"] is True and memo["result"] == "stored 'grpc_year'"
    assert memo["latency_s"] > 0 and memo["parent_run_id"] is not None
    assert [e["ts"] for e in entries] == sorted(e["ts"] for e in entries)

    printed = subprocess.run([sys.executable, "-m", "mesh", "audit", "audited-1", "--dir",
                              str(tmp_path / "audit")], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert lines == entries
