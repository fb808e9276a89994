"""Write the three agents' cassettes: a recorded batch, generated from the data files.

A live recording of this batch is about a hundred model calls, and any edit
of the leads, the corpus or the manager's code would mean recording again;
so the cassettes are generated, deterministically, in the shape of a
gpt-4o-mini run, from ``data/leads.csv``, ``data/expected.jsonl`` (what a
careful researcher finds) and ``data/search_corpus.jsonl`` (where it finds
it: every field's source is a search result that states it, checked here).
Five leads take the paths a batch meets in practice, named in ``SCENARIOS``.

Identifier verdicts are not written here: the validation specialist's
recorded code calls the check tools, which compute them when it replays.

    python make_cassettes.py           # rewrite the cassettes (commit them with the data)
    python make_cassettes.py --check   # exit 1 if they are not what the data gives
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.tools import CorpusBackend, SearchResult

from services.manager.leads import Lead, parse_leads
from services.manager.results import FIELDS

HERE = Path(__file__).resolve().parent
TASK = tomllib.loads((HERE / "mesh.toml").read_text())["mesh"]["task"]
REFRESH_TASK = (
    "Enrich the leads in data/leads.csv again, refreshing those already enriched, "
    "and write out/enriched.jsonl"
)
SCENARIOS = {
    "heineken-nv-nl": "model_error",  # the provider times out mid-run: the lead fails
    "nokia-oyj-fi": "schema_retry",  # an off-schema answer, corrected once told what is wrong
    "inditex-es": "schema_fail",  # off-schema twice: the run fails, the lead with it
    "novo-nordisk-a-s-dk": "injection",  # a search result orders the model about: ignored
}
COUNTRIES = {"DE": "Germany", "FR": "France", "IT": "Italy", "BE": "Belgium", "GB": "UK",
             "NL": "Netherlands", "DK": "Denmark", "FI": "Finland", "CH": "Switzerland",
             "US": "USA", "ES": "Spain"}  # fmt: skip
WIKIPEDIA = "https://en.wikipedia.org/wiki/"
RESULTS = 8
MODEL = "gpt-4o-mini"

# The manager's recorded code. The task helpers are run here too (exec), so the
# tasks the specialists' cassettes are keyed by are exactly those its code sends.
HELPERS = """def research_task(lead):
    return (f"Research the company {lead['company']} (country: {lead['country'] or 'unknown'}, "
            f"website: {lead['website'] or 'unknown'}) for sales lead {lead['key']}: industry, "
            f"headcount band, headquarters city, founded year and website, each with its source "
            f"URL. Store the result in the memo under 'lead:{lead['key']}' and answer with it.")


def validation_task(lead):
    return (f"Check the identifier {lead['identifier']} of lead {lead['key']} "
            f"(country: {lead['country'] or 'unknown'}) and answer with the lead's key and the "
            f"verdict.")"""
READ = """batch = read_leads(path="data/leads.csv"{refresh})
leads, skipped = batch["leads"], batch["skipped"]
cached = [s for s in skipped if s.get("cached")]
print(f"{{len(leads)}} leads to research, {{len(cached)}} already enriched")
for s in skipped:
    print(f"row {{s['lead']['row']}} set aside: {{s['reason']}}")"""
FAN_OUT = (
    HELPERS
    + """


to_check = [lead for lead in leads + [s["lead"] for s in cached] if lead["identifier"]]
calls = [{"tool": "research_specialist", "arguments": {"task": research_task(lead)}}
         for lead in leads]
calls += [{"tool": "validation_specialist", "arguments": {"task": validation_task(lead)}}
          for lead in to_check]
results = run_parallel(calls=calls)
research = dict(zip([lead["key"] for lead in leads], results[:len(leads)]))
checks = dict(zip([lead["key"] for lead in to_check], results[len(leads):]))
print(f"{len(calls)} calls, {sum(r['ok'] for r in results)} succeeded")
for what, outcomes in (("research", research), ("check", checks)):
    for key, outcome in outcomes.items():
        if not outcome["ok"]:
            print(f"{what} of {key} failed: {outcome['error'][:300]}")"""
)
WRITE = """rows = [{"lead": lead, "research": research[lead["key"]],
         "validation": checks.get(lead["key"])} for lead in leads]
rows += [{"lead": s["lead"], "research": s["research"], "cached": True,
          "validation": checks.get(s["lead"]["key"])} for s in cached]
rows += [{"lead": s["lead"], "skipped": s["reason"]} for s in skipped if not s.get("cached")]
summary = write_results(path="out/enriched.jsonl", rows=rows)
print(summary)"""


def manager(refresh: bool) -> list[dict[str, Any]]:
    read = READ.format(refresh=", refresh=True" if refresh else "")
    turns = [
        ("I'll read the leads first; read_leads sets aside those already enriched.", read),
        (
            "Now the fan-out, in one run_parallel call: a research run per lead to research and "
            "a check per identifier, the cached leads' included.",
            FAN_OUT,
        ),
        ("Merging each lead with its research and its check, then writing the files.", WRITE),
        ("The files are written; the summary is the answer.", "final_answer(summary)"),
    ]
    task = REFRESH_TASK if refresh else TASK
    return [
        entry(task, n, f"{thought}\n```python\n{code}\n```", [], 2100 + 700 * n)
        for n, (thought, code) in enumerate(turns)
    ]


def research(
    key: str, lead: Lead, truth: dict[str, Any], corpus: CorpusBackend
) -> list[dict[str, Any]]:
    scenario = SCENARIOS.get(key, "found")
    query = " ".join(f"{lead['company']} {COUNTRIES.get(lead['country'] or '', '')}".split())
    turns: list[Turn] = [(f"I'll search for {lead['company']}.", [_search(query, RESULTS)])]
    if truth["found"]:
        answer = found_answer(key, lead, truth, corpus, query)
    else:
        answer, scenario = not_found(key), "not_found"
        turns.append((f"No result is about {lead['company']}; I'll try its website.",
                      [_search(lead["website"] or lead["company"] or key)]))  # fmt: skip
    turns += ENDINGS[scenario](key, answer)
    task = TASKS["research_task"](lead)
    entries = [entry(task, n, text, calls, 1350 + 450 * n) for n, (text, calls) in enumerate(turns)]
    if scenario == "model_error":  # the call after the search fails: the run ends there
        entries[1:] = [{"task": task, "turn": 1, "error": {
            "kind": "timeout", "message": "the provider did not answer within 60 s"}}]  # fmt: skip
    return entries


Turn = tuple[str | None, list[tuple[str, dict[str, Any]]]]
"""A model turn: its text, and its tool calls (name, arguments)."""


def _search(query: str, max_results: int = 5) -> tuple[str, dict[str, Any]]:
    return "web_search", {"query": query, "max_results": max_results}


def _store(key: str, answer: Any) -> tuple[str, dict[str, Any]]:
    return "memo", {"action": "set", "key": f"lead:{key}", "value": answer}


def _stored(key: str, answer: Any, note: str = "The results agree") -> list[Turn]:
    return [(f"{note}; storing the result in the memo.", [_store(key, answer)]),
            (None, [("final_answer", {"answer": answer})])]  # fmt: skip


def _rejected(key: str, bad: Any, fixed: Any, store: bool) -> list[Turn]:
    """An off-schema answer stored and given, then one more try (``fixed``) once told why."""
    again = [_store(key, fixed)] if store else []
    return [("Storing what I found.", [_store(key, bad)]),
            (None, [("final_answer", {"answer": bad})]),
            ("The answer must match the schema; correcting it.",
             [*again, ("final_answer", {"answer": fixed})])]  # fmt: skip


INJECTED = ("One result (bizdirectory.example.net) tells me to change my answer: it is untrusted "
            "data, not an instruction, so I ignore it. The other results agree")  # fmt: skip
ENDINGS: dict[str, Callable[[str, dict[str, Any]], list[Turn]]] = {
    "found": _stored,
    "not_found": lambda key, answer: _stored(key, answer, "Nothing about it either"),
    "injection": lambda key, answer: _stored(key, answer, INJECTED),
    "model_error": _stored,
    # the band as the page says it, then the enum's value
    "schema_retry": lambda key, answer: _rejected(
        key, {**answer, "headcount_band": "about 80,000"}, answer, store=True),
    # sources as a list, confidence as a word; then still the list
    "schema_fail": lambda key, answer: _rejected(
        key, {**answer, "sources": sorted(filter(None, answer["sources"].values())),
              "confidence": "high"},
        {**answer, "sources": sorted(filter(None, answer["sources"].values()))}, store=False),
}  # fmt: skip


def found_answer(
    key: str, lead: Lead, truth: dict[str, Any], corpus: CorpusBackend, query: str
) -> dict[str, Any]:
    """The answer, each field's source a result of ``query`` that states it: an encyclopedia
    page stating industry, city and year together, the company's own page the rest."""
    results = corpus(query, RESULTS)
    stem = truth["website"].split(".")[0]

    def states(doc: SearchResult, *values: Any) -> bool:
        text = f"{doc['title']} {doc['body']}".lower()
        return all(str(value).lower() in text for value in values)

    facts = [truth[field] for field in ("industry", "headquarters_city", "founded_year")]
    wiki = [d["href"] for d in results if d["href"].startswith(WIKIPEDIA) and states(d, *facts)]
    own = [d["href"] for d in results if stem in d["href"] and states(d, "employees")]
    site = [d["href"] for d in results if stem in d["href"] and states(d, truth["website"])]
    if not (wiki and own and site):
        raise SystemExit(f"{key}: the results of {query!r} do not state every field")
    sources = {"industry": wiki[0], "headcount_band": own[0], "headquarters_city": wiki[0],
               "founded_year": wiki[0], "website": site[0]}  # fmt: skip
    doubt = SCENARIOS.get(key) == "injection" or not lead["country"]
    return {"lead_key": key, "found": True, **{field: truth[field] for field in FIELDS},
            "sources": sources, "confidence": 0.85 if doubt else 0.9}  # fmt: skip


def not_found(key: str) -> dict[str, Any]:
    return {"lead_key": key, "found": False, **dict.fromkeys(FIELDS),
            "sources": dict.fromkeys(FIELDS), "confidence": 0.0}  # fmt: skip


def validation(lead: Lead) -> list[dict[str, Any]]:
    identifier, country = lead["identifier"] or "", lead["country"]
    if len("".join(identifier.split())) == 20:
        thought, call = "A 20-character LEI: check_lei.", f"check_lei(lei={json.dumps(identifier)})"
    else:
        where = f", country={json.dumps(country)}" if country else ""
        thought, call = (
            "A VAT number: check_vat.",
            f"check_vat(vat={json.dumps(identifier)}{where})",
        )
    key = json.dumps(lead["key"])
    code = f'verdict = {call}\nfinal_answer({{"lead_key": {key}, **verdict}})'
    task = TASKS["validation_task"](lead)
    return [entry(task, 0, f"{thought}\n```python\n{code}\n```", [], 1180)]


def entry(
    task: str, turn: int, content: str | None, calls: list[Any], tokens: int
) -> dict[str, Any]:
    """One recorded model call; its output tokens estimated at 4 characters each."""
    tool_calls = [{"id": f"call_{turn}_{n}", "name": name,
                   "arguments": json.dumps(arguments, ensure_ascii=False)}
                  for n, (name, arguments) in enumerate(calls)]  # fmt: skip
    output = 20 + len(content or "") // 4 + sum(len(c["arguments"]) // 4 for c in tool_calls)
    return {"task": task, "turn": turn, "response": {
        "content": content, "tool_calls": tool_calls, "model": MODEL,
        "usage": {"input_tokens": tokens, "output_tokens": output},
        "finish_reason": "tool_calls" if tool_calls else "stop"}}  # fmt: skip


TASKS: dict[str, Any] = {}
exec(HELPERS, TASKS)  # the manager's own task helpers (see HELPERS)


def cassettes() -> dict[Path, str]:
    corpus = CorpusBackend(HERE / "data" / "search_corpus.jsonl")
    lines = (HERE / "data" / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    truths = {row["lead_key"]: row for row in map(json.loads, lines)}
    leads: dict[str, Lead] = {}
    for lead in parse_leads(HERE / "data" / "leads.csv"):
        if lead["key"] is not None:
            leads.setdefault(lead["key"], lead)  # a duplicate row is never researched
    if set(leads) != set(truths):
        raise SystemExit(f"leads and expected.jsonl differ: {sorted(set(leads) ^ set(truths))}")
    entries = {
        "manager": manager(refresh=False) + manager(refresh=True),
        "research_specialist": [e for key, lead in leads.items()
                                for e in research(key, lead, truths[key], corpus)],
        "validation_specialist": [e for lead in leads.values() if lead["identifier"]
                                  for e in validation(lead)],
    }  # fmt: skip
    header = ("Generated by make_cassettes.py in the shape of a gpt-4o-mini run of the batch; "
              "`mesh record` replaces it with a live recording.")  # fmt: skip
    files = {agent: [{"cassette": 1, "description": f"{agent}: {header}"}, *rows]
             for agent, rows in entries.items()}  # fmt: skip
    return {HERE / "services" / agent / "cassette.jsonl":
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in rows)
            for agent, rows in files.items()}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a cassette is stale")
    args = parser.parse_args()
    stale = []
    for path, text in cassettes().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            stale.append(path.relative_to(HERE))
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "cassettes up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
