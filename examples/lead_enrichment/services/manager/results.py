"""Turning the manager's merged rows into the output files and their summary.

The manager's code only collects, per lead, what came back (a research
answer, an identifier verdict, or the error of either); deciding a lead's
status, flattening fields and counting happen here, in code that a test
checks, so that a model never writes the bookkeeping and the summary always
describes the files exactly.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CSV_COLUMNS", "FIELDS", "flatten", "summarise", "write_files"]

FIELDS = ("industry", "headcount_band", "headquarters_city", "founded_year", "website")
"""The enriched fields, each with a source URL in ``sources``."""
CSV_COLUMNS = (
    "lead_key",
    "row",
    "company",
    "country",
    "identifier",
    "status",
    "cached",
    *FIELDS,
    "confidence",
    "identifier_valid",
    "identifier_kind",
    "identifier_problem",
    "identifier_reason",
    *(f"source_{field}" for field in FIELDS),
    "error",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """One output line from ``{"lead", "research", "validation", "cached"}``: research and
    validation may each be an answer, a ``run_parallel`` outcome (``{"ok", "result"}`` or
    ``{"ok": false, "error"}``) or missing."""
    lead = row.get("lead")
    if not isinstance(lead, Mapping) or not lead.get("key"):
        raise ValueError(f"each row needs the lead read_leads gave, with its key; got {row!r:.200}")
    research, error = _unwrap(row.get("research"), "research")
    claimed = research.get("lead_key") if research is not None else None
    if claimed not in (None, lead["key"]):  # a live model may mix up two leads
        research, error = None, f"the research answer is for {claimed!r}"
    status = "failed" if research is None else "enriched" if research.get("found") else "not_found"
    found: Mapping[str, Any] = research if research is not None and status == "enriched" else {}
    given = found.get("sources")
    sources: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    return {
        "lead_key": lead["key"],
        "row": lead.get("row"),
        "company": lead.get("company"),
        "country": lead.get("country"),
        "identifier": lead.get("identifier"),
        "input_website": lead.get("website"),
        "status": status,
        "cached": bool(row.get("cached")),
        **{field: found.get(field) for field in FIELDS},
        "confidence": research.get("confidence") if research is not None else None,
        "sources": {field: sources.get(field) for field in FIELDS},
        **_identifier(lead, row.get("validation")),
        "error": error,
    }


def summarise(outputs: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts that describe the written files (computed from them, never retyped)."""
    statuses = Counter(output["status"] for output in outputs)
    verdicts = Counter(_verdict_name(output) for output in outputs)
    return {
        "leads": len(outputs),
        "enriched": statuses["enriched"],
        "not_found": statuses["not_found"],
        "failed": statuses["failed"],
        "researched": sum(not output["cached"] for output in outputs),
        "cached": sum(output["cached"] for output in outputs),
        "identifiers": {
            name: verdicts[name] for name in ("valid", "invalid", "unchecked", "missing")
        },
        "failures": [
            {"lead_key": o["lead_key"], "error": o["error"]}
            for o in outputs
            if o["status"] == "failed"
        ],
        "skipped_rows": skipped,
    }


def write_files(jsonl: Path, outputs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The JSONL, the CSV beside it and the summary, each replaced whole (never half-written)."""
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(output, ensure_ascii=False) + "\n" for output in outputs)
    _replace(jsonl, lines)
    _replace(jsonl.with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n")
    csv_path = jsonl.with_suffix(".csv")
    temporary = csv_path.with_name(csv_path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for output in outputs:
            cells = {**output, **{f"source_{k}": v for k, v in output["sources"].items()}}
            writer.writerow({name: _cell(value) for name, value in cells.items()})
    os.replace(temporary, csv_path)


def _unwrap(value: Any, what: str) -> tuple[dict[str, Any] | None, str | None]:
    """(answer, error) from an answer, a run_parallel outcome or nothing."""
    if value is None:
        return None, f"no {what} result"
    if isinstance(value, str):  # a live model may answer with the JSON as text
        try:
            value = json.loads(value)
        except ValueError:
            return None, f"the {what} answer is text, not an object: {value[:200]!r}"
    if not isinstance(value, Mapping):
        return None, f"the {what} answer is not an object: {value!r:.200}"
    if "ok" in value:
        if value["ok"]:
            return _unwrap(value.get("result"), what)
        return None, str(value.get("error") or f"the {what} call failed")
    return dict(value), None


def _identifier(lead: Mapping[str, Any], validation: Any) -> dict[str, Any]:
    if not lead.get("identifier"):
        return _verdict(None, None, "missing", "no identifier given")
    verdict, error = _unwrap(validation, "validation")
    if verdict is None:
        return _verdict(None, None, "unchecked", error)
    return _verdict(
        verdict.get("valid"), verdict.get("kind"), verdict.get("problem"), verdict.get("reason")
    )


def _verdict(valid: Any, kind: Any, problem: Any, reason: Any) -> dict[str, Any]:
    return {
        "identifier_valid": valid,
        "identifier_kind": kind,
        "identifier_problem": problem,
        "identifier_reason": reason,
    }


def _verdict_name(output: Mapping[str, Any]) -> str:
    if output["identifier_problem"] == "missing":
        return "missing"
    valid = output["identifier_valid"]
    return "unchecked" if valid is None else "valid" if valid else "invalid"


def _cell(value: Any) -> Any:
    """A CSV cell; text from the web that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
