"""Scale-out: one specialist served by two replicas, one killed in the middle of a burst."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mesh.append_only import read_records
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.remote import RemoteAgent
from tests.mesh_setup import SEED_SERVICES
from tests.support import wait_until

MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."
CONFIG = """
[mesh]
replay = "always"
replay_latency_ms = 120

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic."
address = ["127.0.0.1:0", "127.0.0.1:0"]
tools = ["smallest_prime_factor"]
cassette = "SEED/math_specialist/cassette.jsonl"
idempotent = true
""".replace("SEED", str(SEED_SERVICES))


def audit_counts(path: Path) -> tuple[int, int]:
    """(runs started, runs finished successfully) in one replica's audit file."""
    entries = list(read_records(path))  # a line being written is skipped
    started = sum(1 for e in entries if e["event"] == "RunStarted")
    finished = sum(1 for e in entries if e["event"] == "RunFinished" and not e["error"])
    return started, finished


def test_a_burst_survives_losing_a_replica(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(CONFIG)
    config = load_mesh_config(tmp_path / "mesh.toml")
    env = {"MESH_AUDIT_DIR": str(tmp_path / "audit")}
    burst = 24
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs") as mesh:
        replicas = [s for s in mesh.services if s.agent == "math_specialist"]
        assert len(replicas) == 2
        remote = RemoteAgent("math_specialist", [r.address for r in replicas],
                             idempotent=True, retries=4, retry_delay_s=0.05)  # fmt: skip
        answers: list[object] = []
        lock = threading.Lock()

        def delegate(_: int) -> None:
            answer = remote.run(MATH_TASK)
            with lock:
                answers.append(answer)

        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(delegate, i) for i in range(burst)]
            victim = replicas[0]
            victim_audit = tmp_path / "audit" / f"math_specialist-{victim.process.pid}.jsonl"

            def victim_served_and_is_mid_run() -> bool:
                if not victim_audit.exists():
                    return False
                started, finished = audit_counts(victim_audit)
                return finished >= 1 and started > finished  # a run of 240 ms has just begun

            wait_until(victim_served_and_is_mid_run, timeout_s=30)
            victim.process.send_signal(signal.SIGKILL)
            for future in futures:
                future.result(timeout=60)
        remote.close()

    # None lost: every delegation got exactly one answer, and the right one.
    assert answers == [5] * burst
    audit = tmp_path / "audit"
    counts = {r.process.pid: audit_counts(audit / f"math_specialist-{r.process.pid}.jsonl")
              for r in replicas}  # fmt: skip
    (victim_started, victim_done), (_, survivor_done) = (
        counts[victim.process.pid],
        counts[replicas[1].process.pid],
    )
    # Both replicas served, and the killed one was cut off mid-run.
    assert victim_done >= 1 and survivor_done >= 1
    interrupted = victim_started - victim_done
    retried = remote.retried_started + remote.retried_unstarted
    # (A run the victim started whose first event never reached the caller counts, from the
    # caller's side, as not started: the retry is just as safe.)
    assert interrupted >= 1 and retried >= interrupted
    # None duplicated beyond what a retry implies: every completed run is one delegation,
    # except when a replica died after finishing a run but before its answer arrived.
    assert victim_done + survivor_done - burst <= retried - interrupted
