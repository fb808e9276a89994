"""The manager's tools: the batch's input and output, kept inside the project directory.

The manager's code runs in a jail that sees no project files; these tools
run in the manager's service and are the only way its code reads leads or
writes results. A model-written path is untrusted, so ``read_leads`` refuses
one that leaves the project (``../``, an absolute path elsewhere, a symlink
out) and ``write_results`` one outside ``out/`` (it must never overwrite the
leads, the code or a cassette).

Re-runs are cheap: the research specialist stores each finished lead in the
durable memo (``lead:<key>``, the memo at ``$MESH_MEMO_PATH``), and
``read_leads`` sets those aside unless asked to refresh. A stored record
counts only if it would pass as a research answer (the research
specialist's output schema): a half-written or off-schema one is researched
again.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # smolmesh's own dependency
from mesh import MemoTool, tool

from services.manager.leads import parse_leads
from services.manager.results import flatten, summarise, write_files

__all__ = ["read_leads", "write_results"]

PROJECT = Path(__file__).resolve().parents[2]
OUTPUT = PROJECT / "out"
"""Where results may be written: never over the leads, the code or the cassettes."""
RESEARCH_SCHEMA = PROJECT / "services" / "research_specialist" / "output.schema.json"
ALREADY_ENRICHED = "already enriched"


@tool
def read_leads(path: str, refresh: bool = False) -> dict[str, Any]:
    """Read a CSV of leads (columns company, country, identifier, website), normalised, each
    with a stable key. Leads already enriched (in the memo under lead:<key>) are set aside in
    "skipped" with their stored research, unless refresh is true; so are duplicate rows and
    rows without a company name.

    Args:
        path: The CSV, relative to the project directory, e.g. data/leads.csv.
        refresh: Research every lead again, even those already enriched.

    Returns:
        {"leads": [leads to research: {"key", "row", "company", "country", "identifier",
        "website"}], "skipped": [{"lead", "reason", and for an enriched lead "cached": true
        and "research": its stored research answer}]}.
    """
    enriched = {} if refresh else _enriched()
    leads: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    for lead in parse_leads(inside(path, PROJECT, "data/leads.csv")):
        key = lead["key"]
        if key is None:
            skipped.append({"lead": lead, "reason": "no company name"})
        elif key in first_row:
            skipped.append({"lead": lead, "reason": f"duplicate of row {first_row[key]} ({key})"})
        elif key in enriched:
            first_row[key] = lead["row"]
            skipped.append(
                {
                    "lead": lead,
                    "reason": ALREADY_ENRICHED,
                    "cached": True,
                    "research": enriched[key],
                }
            )
        else:
            first_row[key] = lead["row"]
            leads.append(dict(lead))
    return {"leads": leads, "skipped": skipped}


@tool
def write_results(path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the enriched leads as JSONL at path, as CSV beside it (.csv) and a summary
    (.summary.json), in the order of the input rows, and return the summary's counts.

    Args:
        path: The JSONL file to write, under out/ in the project directory, e.g.
            out/enriched.jsonl.
        rows: One per lead: {"lead": the lead from read_leads, "research": the
            research_specialist's answer or its run_parallel outcome, "validation": the
            validation_specialist's answer or its run_parallel outcome (omit when the lead
            has no identifier), "cached": true for a lead read_leads skipped as already
            enriched}; a skipped duplicate may be given as {"lead", "skipped": reason}.

    Returns:
        The summary: files written, leads, enriched, not_found, failed, researched, cached,
        identifier verdict counts, failures and skipped rows.
    """
    target = inside(path, OUTPUT, "out/enriched.jsonl", must_exist=False)
    if target.suffix != ".jsonl":
        raise ValueError(f"path must name a .jsonl file, got {path!r}")
    skipped = [_skipped(row) for row in rows if row.get("skipped")]
    outputs = sorted(
        (flatten(row) for row in rows if not row.get("skipped")),
        key=lambda output: output["row"] or 0,
    )
    keys = [output["lead_key"] for output in outputs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"rows name these leads more than once: {twice}")
    summary = summarise(outputs, skipped)
    files = {
        "jsonl": target,
        "csv": target.with_suffix(".csv"),
        "summary": target.with_suffix(".summary.json"),
    }
    summary = {"files": {k: str(v.relative_to(PROJECT)) for k, v in files.items()}, **summary}
    write_files(target, outputs, summary)
    return summary


def inside(path: str, base: Path, example: str, *, must_exist: bool = True) -> Path:
    """``path`` resolved against the project directory; refused unless it stays in ``base``
    (after ``..`` and symbolic links)."""
    resolved = (PROJECT / path).resolve()
    if not resolved.is_relative_to(base):
        raise PermissionError(f"{path!r} is outside {base}: give a path inside it, like {example}")
    if must_exist and not resolved.is_file():
        raise FileNotFoundError(f"no file {path!r} in the project directory {PROJECT}")
    return resolved


def _enriched() -> dict[str, Any]:
    """Stored research records by lead key: only those that pass the research schema."""
    memo = MemoTool()
    records = {}
    names: list[str] = memo.keys()  # the memo's own method, not a dict's
    for name in names:
        if name.startswith("lead:"):
            key, record = name.removeprefix("lead:"), memo.get(name)
            valid = not any(True for _ in _research_validator().iter_errors(record))
            if valid and record["lead_key"] == key:
                records[key] = record
    return records


@cache
def _research_validator() -> Any:
    schema = json.loads(RESEARCH_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _skipped(row: dict[str, Any]) -> dict[str, Any]:
    lead = row.get("lead") or {}
    return {"row": lead.get("row"), "company": lead.get("company"), "reason": row["skipped"]}
