"""Compare an enrichment's output with the hand-checked expected leads; print a table.

    python evaluate.py out/enriched.jsonl data/expected.jsonl \\
        --min-field-accuracy 0.92 --min-identifier-accuracy 1.0 --max-failed 2

Per field, the share of expected leads whose output matches; the share of
identifier verdicts (valid or not, and the kind of problem) that match; and
the leads that failed (or are missing from the output). Exits 1 when a
threshold given is not met, so CI can require the recorded accuracy.

Text fields match loosely, as a reviewer would: case, accents and plural
endings aside, one side's words contained in the other's ("Ludwigshafen" for
"Ludwigshafen am Rhein", "pharmaceutical" for "Pharmaceuticals"). Years and
headcount bands match exactly; websites as bare domains. A lead that failed
matches no field, unless the field's expected value is null.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIELDS = ("found", "industry", "headcount_band", "headquarters_city", "founded_year", "website")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the JSONL the enrichment wrote")
    parser.add_argument("expected", type=Path, help="the hand-checked expected JSONL")
    parser.add_argument(
        "--min-field-accuracy",
        type=float,
        default=0.0,
        help="every field at least this accurate (0-1)",
    )
    parser.add_argument(
        "--min-identifier-accuracy",
        type=float,
        default=0.0,
        help="identifier verdicts at least this accurate (0-1)",
    )
    parser.add_argument(
        "--max-failed", type=int, default=None, help="at most this many leads failed or missing"
    )
    args = parser.parse_args(argv)
    outputs = {row["lead_key"]: row for row in _read(args.output)}
    expected = _read(args.expected)
    if not expected:
        parser.error(f"{args.expected} holds no leads")
    scores = {
        field: sum(_matches(field, e, outputs.get(e["lead_key"])) for e in expected)
        for field in FIELDS
    }
    verdicts = sum(_verdict_matches(e, outputs.get(e["lead_key"])) for e in expected)
    failed = [
        e["lead_key"]
        for e in expected
        if outputs.get(e["lead_key"], {}).get("status", "failed") == "failed"
    ]
    total = len(expected)
    print(f"{'':<22}{'correct':>8}{'of':>5}{'accuracy':>10}")
    for field, correct in scores.items():
        print(f"{field:<22}{correct:>8}{total:>5}{correct / total:>10.1%}")
    print(f"{'identifier verdict':<22}{verdicts:>8}{total:>5}{verdicts / total:>10.1%}")
    print(f"{'leads failed':<22}{len(failed):>8}{total:>5}   {', '.join(failed)}")
    extra = sorted(set(outputs) - {e["lead_key"] for e in expected})
    if extra:
        print(f"not in the expected file (ignored): {', '.join(extra)}")
    _print_mismatches(expected, outputs)
    problems = [
        f"{field} accuracy {correct / total:.1%} < {args.min_field_accuracy:.1%}"
        for field, correct in scores.items()
        if correct / total < args.min_field_accuracy
    ]
    if verdicts / total < args.min_identifier_accuracy:
        problems.append(
            f"identifier accuracy {verdicts / total:.1%} < {args.min_identifier_accuracy:.1%}"
        )
    if args.max_failed is not None and len(failed) > args.max_failed:
        problems.append(f"{len(failed)} leads failed > {args.max_failed}")
    for problem in problems:
        print(f"BELOW THRESHOLD: {problem}")
    return 1 if problems else 0


def _read(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _matches(field: str, expected: dict[str, Any], output: dict[str, Any] | None) -> bool:
    want = expected[field]
    if output is None or output.get("status") == "failed":
        return want is None and field != "found"
    got = output.get("status") == "enriched" if field == "found" else output.get(field)
    if want is None or got is None:
        return want is None and got is None
    compare: Callable[[Any, Any], bool] = _COMPARE.get(field, lambda a, b: a == b)
    return bool(compare(want, got))


def _verdict_matches(expected: dict[str, Any], output: dict[str, Any] | None) -> bool:
    if output is None:
        return False
    return bool(
        output.get("identifier_valid") == expected["identifier_valid"]
        and output.get("identifier_problem") == expected["identifier_problem"]
    )


def _words(text: str) -> set[str]:
    plain = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode().lower()
    return {
        w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z0-9]+", plain)
    }


def _same_words(want: Any, got: Any) -> bool:
    a, b = _words(want), _words(got)
    return bool(a and b) and (a <= b or b <= a)


def _domain(value: Any) -> str:
    text = re.sub(r"^[a-z]+://", "", str(value).strip().lower())
    return text.split("/", 1)[0].removeprefix("www.")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "industry": _same_words,
    "headquarters_city": _same_words,
    "website": lambda want, got: _domain(want) == _domain(got),
}


def _print_mismatches(expected: list[dict[str, Any]], outputs: dict[str, Any]) -> None:
    for e in expected:
        output = outputs.get(e["lead_key"])
        wrong = [field for field in FIELDS if not _matches(field, e, output)]
        if not _verdict_matches(e, output):
            wrong.append("identifier")
        if wrong:
            status = output.get("status") if output else "missing"
            print(f"  {e['lead_key']} ({status}): {', '.join(wrong)}")


if __name__ == "__main__":
    sys.exit(main())
