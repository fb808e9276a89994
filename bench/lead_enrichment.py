"""Lead enrichment at batch sizes of 20, 100 and 500 leads: the fan-out against its ideal.

Run by hand: ``.venv/bin/python bench/lead_enrichment.py [SIZES ...] [--latency-ms 300]``.
Each size gets its own copy of ``examples/lead_enrichment`` with a synthetic batch: the
example's leads repeated under numbered names (a lead's search results are copied with
its number, so every copy is researched like the original), and cassettes generated
from it by the example's own ``make_cassettes.py``; every replayed model call takes
``--latency-ms``. The mesh starts once per size (not timed), then the manager runs the
batch: one ``run_parallel`` of a research run per lead and an identifier check per lead,
16 at once.

The ideal is what the model alone forces at that fan-out: the manager's own calls one
after another, plus the delegations packed onto 16 slots in the order the manager sends
them (each lasting its model calls times the latency). Prints wall time, the ideal and
their ratio, leads per second, CPU per lead (services and their jails) and each
service's peak RSS. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mesh import RemoteAgent
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.tools import CorpusBackend

EXAMPLE = Path(__file__).parent.parent / "examples" / "lead_enrichment"
FAN_OUT = 16
RESULTS = 8  # the research specialist's recorded searches ask for 8 results
CLOCK = os.sysconf("SC_CLK_TCK")


def synthesize(root: Path, size: int, latency_ms: int) -> None:
    """``root``: a copy of the example whose batch is ``size`` numbered leads."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out", "__pycache__", ".*cache"))
    with (EXAMPLE / "data" / "leads.csv").open(encoding="utf-8") as file:
        named = [r for r in csv.DictReader(file) if (r.get("company") or "").strip()]
    rows = list({r["company"].strip().lower(): r for r in reversed(named)}.values())[::-1]
    lines = (EXAMPLE / "data" / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = {e["company"]: e for e in map(json.loads, lines)}
    leads = []
    for n in range(size):  # the example's leads, once each (not its duplicate row), in turn
        row = dict(rows[n % len(rows)])
        leads.append({**row, "company": f"{row['company'].strip()} {_tag(n)}"})
    info = _research_queries(root, [*rows, *leads])
    corpus = CorpusBackend(EXAMPLE / "data" / "search_corpus.jsonl")
    documents, truths = list(corpus.documents), []
    for n, lead in enumerate(leads):
        base = rows[n % len(rows)]["company"].strip()
        tag = _tag(n)
        # What the original's search finds, tagged: the copy's search (the original's words
        # and the tag's) ranks exactly these first, in the same order.
        for document in corpus(info[base]["query"], RESULTS):
            documents.append({**document, "title": f"{document['title']} {tag}",
                              "body": f"{document['body']} {tag}"})  # fmt: skip
        key = info[lead["company"]]["key"]
        truths.append({**expected[base], "company": lead["company"], "lead_key": key})
    _write_csv(root / "data" / "leads.csv", leads)
    _write_jsonl(root / "data" / "search_corpus.jsonl", documents)
    _write_jsonl(root / "data" / "expected.jsonl", truths)
    subprocess.run([sys.executable, "make_cassettes.py"], cwd=root, check=True,
                   capture_output=True, env=_env(root))  # fmt: skip
    config = root / "mesh.toml"
    config.write_text(config.read_text().replace('replay = "auto"', 'replay = "always"\n'
                                                 f"replay_latency_ms = {latency_ms}"))  # fmt: skip


def _tag(n: int) -> str:
    """Words only copy ``n`` has: more of them than any query has words, so that the search
    for a copy ranks every one of its own pages above every other page."""
    return " ".join(f"{letter}{n:04d}" for letter in ("Ua", "Ub", "Uc", "Ud", "Ue", "Uf", "Ug"))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def _research_queries(root: Path, rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each company's lead key and the query its research searches for, as the example's
    own code computes them (run in the project: its package is ``services``)."""
    code = """
import json, sys
import make_cassettes
from services.manager.leads import normalise
out = {}
for row in json.loads(sys.stdin.read()):
    lead = normalise(row, 0)
    country = make_cassettes.COUNTRIES.get(lead["country"] or "", "")
    out[row["company"].strip()] = {"key": lead["key"],
                                   "query": " ".join(f"{lead['company']} {country}".split())}
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        check=True,
        text=True,
        input=json.dumps(rows),
        capture_output=True,
        env=_env(root),
    )
    return dict(json.loads(done.stdout))


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    data = root / ".data"
    env.update(MESH_MEMO_PATH=str(data / "memo.sqlite3"), MESH_TRACE_DIR=str(data / "traces"),
               MESH_AUDIT_DIR=str(data / "audit"), MESH_TOOL_LOG_DIR=str(data / "tools"),
               MESH_RUNS_DIR=str(data / "runs"), XDG_DATA_HOME=str(data))  # fmt: skip
    return env


def ideal_s(root: Path, latency_s: float) -> float:
    """The manager's calls in a row, plus its delegations packed onto FAN_OUT slots in the
    order it sends them (research runs, then checks), each its model calls long."""

    def calls(agent: str) -> Counter[str]:
        lines = (root / "services" / agent / "cassette.jsonl").read_text().splitlines()[1:]
        return Counter(json.loads(line)["task"] for line in lines)

    manager = calls("manager")
    own = max(manager.values())  # the batch's task (the refresh task has as many)
    jobs = [*calls("research_specialist").values(), *calls("validation_specialist").values()]
    slots = [0.0] * FAN_OUT
    for job in jobs:
        heapq.heapreplace(slots, slots[0] + job * latency_s)
    return own * latency_s + max(slots)


def cpu_s(pid: int) -> float:
    """User + system time of a process and its reaped children (its jails)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(size: int, latency_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mesh-leads-") as tmp:
        root = Path(tmp) / "lead_enrichment"
        synthesize(root, size, latency_ms)
        env = _env(root)
        os.environ.update({k: env[k] for k in env if k.startswith(("MESH_", "XDG_"))})
        config = load_mesh_config(root / "mesh.toml")
        cwd = Path.cwd()
        os.chdir(root)  # the services run the project from its directory, as `mesh up` does
        try:
            with MeshProcesses(config, log_dir=root / "logs") as mesh:
                pids = {s.agent: s.process.pid for s in mesh.services}
                before = {agent: cpu_s(pid) for agent, pid in pids.items()}
                manager = RemoteAgent("manager", mesh.addresses["manager"])
                started = time.perf_counter()
                summary = manager.run(config.task)
                wall = time.perf_counter() - started
                manager.close()
                cpu = sum(cpu_s(pid) - before[agent] for agent, pid in pids.items())
                rss = {agent: peak_rss_mb(pid) for agent, pid in pids.items()}
        finally:
            os.chdir(cwd)
        ideal = ideal_s(root, latency_ms / 1000)
    return {"size": size, "leads": summary["leads"], "failed": summary["failed"], "wall": wall,
            "ideal": ideal, "cpu": cpu, "rss": rss}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[20, 100, 500])
    parser.add_argument("--latency-ms", type=int, default=300)
    args = parser.parse_args()
    rows = [measure(size, args.latency_ms) for size in args.sizes]
    print(f"fan-out {FAN_OUT}, replayed model {args.latency_ms} ms per call, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(
        f"{'leads':>6} {'failed':>6} {'wall s':>8} {'ideal s':>8} {'ratio':>6} "
        f"{'leads/s':>8} {'CPU ms/lead':>12}  peak RSS MB (manager, research, validation)"
    )
    for r in rows:
        rss = ", ".join(f"{r['rss'][a]:.0f}" for a in ("manager", "research_specialist",
                                                        "validation_specialist"))  # fmt: skip
        print(
            f"{r['leads']:>6} {r['failed']:>6} {r['wall']:>8.2f} {r['ideal']:>8.2f} "
            f"{r['wall'] / r['ideal']:>6.2f} {r['leads'] / r['wall']:>8.2f} "
            f"{r['cpu'] * 1000 / r['leads']:>12.1f}  {rss}"
        )


if __name__ == "__main__":
    main()
