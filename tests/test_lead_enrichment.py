"""The lead-enrichment example (examples/lead_enrichment): its tools, and the whole batch.

The example is a project of its own whose package is also called
``services``, like this repository's seed mesh; so its code never imports
into this process under that name. Modules without project imports load
from their files under unique names; the tools, the cassette generator and
the mesh run in subprocesses whose working directory is a copy of the
example in a temporary directory (the repository's tree stays clean), with
their own memo, traces and run records there, and no model key: the batch
replays its cassettes.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mesh.telemetry.trace_file import read_spans

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lead_enrichment"
REFRESH_TASK = (
    "Enrich the leads in data/leads.csv again, refreshing those already enriched, "
    "and write out/enriched.jsonl"
)
# The recorded accuracy of the replayed batch (README.md of the example): two leads fail on
# purpose (a provider timeout, an answer off the schema twice), so every field is 23/25.
THRESHOLDS = ["--min-field-accuracy", "0.92", "--min-identifier-accuracy", "1.0",
              "--max-failed", "2"]  # fmt: skip


def _load(relative: str) -> ModuleType:
    """A module of the example with no project imports, under a name of its own."""
    name = "lead_enrichment_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checksums = _load("services/validation_specialist/checksums.py")
leads = _load("services/manager/leads.py")
results = _load("services/manager/results.py")
evaluate = _load("evaluate.py")


@pytest.mark.parametrize(
    "kind, value, country",
    [
        ("lei", "W38RGI023J3WT1HWRP32", None),  # Siemens AG
        ("lei", "hwupkr0mpou8fgxbt394", None),  # Apple Inc., lower case
        ("lei", "2138 00D1EI4B9WTWWD28", None),
        ("iban", "DE89 3704 0044 0532 0130 00", None),
        ("iban", "GB29NWBK60161331926819", None),
        ("vat", "DE136695976", None),
        ("vat", "143454214", "DE"),  # SAP SE, the prefix from the country
        ("vat", "FR 40 303 265 045", None),
        ("vat", "FR10632012100", None),  # L'Oréal
        ("vat", "IT00905811006", None),  # Eni
        ("vat", "NL004495445B01", None),
        ("vat", "BE0417.497.106", None),  # AB InBev
        ("vat", "BE417497106", None),  # the old 9-digit form
        ("vat", "GB220430231", None),  # Tesco
        ("vat", "GB980780684", None),
        ("luhn", "4111 1111 1111 1111", None),
        ("luhn", "79927398713", None),
    ],
)
def test_known_valid_identifiers_pass(kind: str, value: str, country: str | None) -> None:
    check = getattr(checksums, kind)
    verdict = check(value, country) if kind == "vat" else check(value)
    assert verdict["valid"] is True, verdict
    assert (verdict["kind"], verdict["problem"]) == (kind, None)


@pytest.mark.parametrize(
    "kind, value, problem, reason",
    [
        ("lei", "529900NNUPAGGOMPXZ32", "checksum", "should be 31, not 32"),
        ("lei", "529900NNUPAGGOMPXZ3", "format", "19 characters"),
        ("lei", "529900NNUPAGGOMPXZ3A", "format", "2 check digits"),
        ("iban", "BE31435411161156", "checksum", "should be"),
        ("iban", "DE8937040044053201300", "format", "a DE IBAN has 22 characters, not 21"),
        ("vat", "DE136695978", "checksum", "MOD 11,10 check digit should be 6, not 8"),
        ("vat", "DE14914501", "format", "DE and 9 digits"),
        ("vat", "FR84323140391", "checksum", ""),
        ("vat", "FR11632012100", "checksum", "the key should be 10"),
        ("vat", "IT00743110158", "checksum", "Luhn"),
        ("vat", "IT00743115157", "format", "tax office"),
        ("vat", "NL123456789B90", "checksum", "MOD 11"),
        ("vat", "BE0431150351", "checksum", "should be"),
        ("vat", "GB802311781", "checksum", "MOD 97"),
        ("vat", "GB12345", "format", "9 digits"),
        ("luhn", "4111111111111112", "checksum", "Luhn"),
    ],
)
def test_format_errors_and_checksum_failures_say_why(
    kind: str, value: str, problem: str, reason: str
) -> None:
    verdict = getattr(checksums, kind)(value)
    assert (verdict["valid"], verdict["problem"]) == (False, problem), verdict
    assert reason in verdict["reason"]


def test_a_vat_number_without_a_rule_is_unchecked_not_invalid() -> None:
    verdict = checksums.vat("ESA15075062")
    assert (verdict["valid"], verdict["problem"]) == (None, "unsupported")
    assert "DE, FR, IT, NL, BE, GB" in verdict["reason"]
    mismatch = checksums.vat("DE136695976", "FR")
    assert (mismatch["valid"], mismatch["problem"]) == (False, "format")


def test_leads_are_normalised_and_keyed_by_company_and_country(tmp_path: Path) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text(
        "\ufeffCompany ,Country,Identifier,Website\n"
        "L'Oréal  S.A.,france, FR 10 632 012 100 ,HTTPS://www.loreal.com/en/\n"
        "Acme,UK,n/a,-\n\n,DE,,\n",
        encoding="utf-8",
    )
    loreal, acme, nameless = leads.parse_leads(csv)
    assert loreal == {"key": "loreal-sa-fr", "row": 2, "company": "L'Oréal S.A.", "country": "FR",
                      "identifier": "FR 10 632 012 100", "website": "loreal.com"}  # fmt: skip
    assert [acme[k] for k in ("key", "country", "identifier", "website")] == [
        "acme-gb", "GB", None, None]  # fmt: skip
    assert (nameless["key"], nameless["row"]) == (None, 5)
    (tmp_path / "bad.csv").write_text("name,country\nAcme,DE\n")
    with pytest.raises(ValueError, match="company at least"):
        leads.parse_leads(tmp_path / "bad.csv")


def test_rows_flatten_to_a_status_fields_and_a_verdict() -> None:
    lead = {"key": "acme-de", "row": 2, "company": "=Acme", "identifier": "X", "website": None}
    answer = {"lead_key": "acme-de", "found": True, "industry": "Tools", "headcount_band": "11-50",
              "headquarters_city": "Berlin", "founded_year": 1990, "website": "acme.de",
              "sources": {"industry": "https://acme.de"}, "confidence": 0.8}  # fmt: skip
    verdict = {"valid": False, "kind": "vat", "problem": "format", "reason": "too short"}
    row = results.flatten({"lead": lead, "research": {"ok": True, "result": answer},
                           "validation": {"ok": True, "result": verdict}})  # fmt: skip
    assert [row["status"], row["industry"], row["sources"]["industry"]] == [
        "enriched", "Tools", "https://acme.de"]  # fmt: skip
    assert (row["identifier_valid"], row["identifier_problem"]) == (False, "format")
    failed = results.flatten({"lead": lead, "research": {"ok": False, "error": "timed out"}})
    assert (failed["status"], failed["error"], failed["industry"]) == ("failed", "timed out", None)
    assert failed["identifier_problem"] == "unchecked"
    other = results.flatten({"lead": lead, "research": {**answer, "lead_key": "other-de"}})
    assert other["status"] == "failed" and "other-de" in other["error"]
    assert results._cell("=Acme") == "'=Acme"  # a formula from the web stays text in a sheet


@dataclass
class Project:
    """A copy of the example with its own data directories and no model key."""

    root: Path
    env: dict[str, str]

    def python(self, code: str) -> Any:
        """Run ``code`` in the project (its ``services`` first on the path); its printed JSON."""
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def demo(self, *task: str) -> dict[str, Any]:
        """``mesh demo`` here, as the README says; the summary it wrote."""
        done = subprocess.run(
            [sys.executable, "-m", "mesh", "demo", *task],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary: dict[str, Any] = json.loads((self.root / "out/enriched.summary.json").read_text())
        return summary

    def evaluate(self) -> int:
        output, expected = self.root / "out/enriched.jsonl", self.root / "data/expected.jsonl"
        return int(evaluate.main([str(output), str(expected), *THRESHOLDS]))


def _project(base: Path) -> Project:
    root = base / "lead_enrichment"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out", "__pycache__", ".*_cache"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k not in ("MESH_MODEL", "MESH_API_BASE")
    }
    data = base / "data"  # set here, not inherited: a module fixture runs before conftest's
    env |= {
        "MESH_MEMO_PATH": str(data / "memo.sqlite3"),
        "MESH_TRACE_DIR": str(data / "traces"),
        "MESH_AUDIT_DIR": str(data / "audit"),
        "MESH_TOOL_LOG_DIR": str(data / "tools"),
        "MESH_RUNS_DIR": str(data / "runs"),
        "XDG_DATA_HOME": str(data),
    }
    return Project(root, env)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return _project(tmp_path)


def test_the_committed_cassettes_are_what_the_data_gives(project: Project) -> None:
    done = subprocess.run(
        [sys.executable, "make_cassettes.py", "--check"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_identifier_tools_have_typed_schemas_and_recognise_the_kind(project: Project) -> None:
    found = project.python(
        "import json\nfrom services.validation_specialist import tools as t\n"
        "print(json.dumps({'specs': {n: t.__dict__[n].inputs for n in t.__all__},\n"
        " 'kinds': [t.check_identifier(identifier=i, country=c)['kind'] for i, c in [\n"
        "  ('DE89370400440532013000', None), ('HWUPKR0MPOU8FGXBT394', None),\n"
        "  ('143454214', 'DE'), ('12345', None)]]}))"
    )
    assert found["specs"]["check_vat"]["country"]["nullable"] is True
    assert found["specs"]["check_lei"]["lei"]["type"] == "string"
    assert found["kinds"] == ["iban", "lei", "vat", "unknown"]


READ_LEADS = """
import json
import os
from mesh import MemoTool, MeshError
from services.manager.tools import read_leads, write_results
memo = MemoTool()
first = read_leads(path="data/leads.csv")
batch = first["leads"]
good = {"lead_key": "siemens-ag-de", "found": False, "industry": None, "headcount_band": None,
        "headquarters_city": None, "founded_year": None, "website": None, "confidence": 0.0,
        "sources": dict.fromkeys(["industry", "headcount_band", "headquarters_city",
                                  "founded_year", "website"])}
memo.set("lead:siemens-ag-de", good)
memo.set("lead:sap-se-de", {**good, "lead_key": "sap-se-de", "sources": []})  # off-schema
again = read_leads(path="data/leads.csv")
refreshed = read_leads(path="data/leads.csv", refresh=True)
refused = []
os.symlink("/etc/hosts", "data/escape.csv")  # a link out of the project is outside too
for call in (lambda: read_leads(path="../../outside.csv"), lambda: read_leads(path="/etc/hosts"),
             lambda: read_leads(path="data/escape.csv"),
             lambda: write_results(path="../x.jsonl", rows=[]),
             lambda: write_results(path="services/manager/cassette.jsonl", rows=[]),
             lambda: write_results(path="out/x.csv", rows=[])):
    try:
        call()
    except MeshError as err:
        refused.append(err.message)
rows = [{"lead": lead, "research": {"ok": False, "error": "down"}}
        for lead in reversed(batch) if lead["key"] != "siemens-ag-de"]
rows.append({"lead": batch[0], "research": good, "cached": True})
rows.append({"lead": {"row": 27, "company": "siemens ag"}, "skipped": "duplicate"})
summary = write_results(path="out/test.jsonl", rows=rows)
written = [json.loads(line)["row"] for line in open("out/test.jsonl")]
print(json.dumps({"first": first, "again": again, "refreshed": refreshed, "refused": refused,
                  "summary": summary, "written": written}))
"""


def test_read_leads_skips_what_the_memo_holds_and_paths_stay_inside(project: Project) -> None:
    found = project.python(READ_LEADS)
    first, again, refreshed = found["first"], found["again"], found["refreshed"]
    assert len(first["leads"]) == 25
    assert [(s["lead"]["row"], s["reason"]) for s in first["skipped"]] == [
        (27, "duplicate of row 2 (siemens-ag-de)")
    ]
    cached = [s for s in again["skipped"] if s.get("cached")]
    assert [s["lead"]["key"] for s in cached] == ["siemens-ag-de"]  # sap's record is off-schema
    assert cached[0]["research"]["found"] is False and len(again["leads"]) == 24
    assert len(refreshed["leads"]) == 25
    reads, writes, csv = found["refused"][:3], found["refused"][3:5], found["refused"][5:]
    assert all("is outside" in m and m.endswith("like data/leads.csv") for m in reads)
    assert all("is outside" in m and m.endswith("like out/enriched.jsonl") for m in writes)
    assert len(csv) == 1 and ".jsonl" in csv[0]
    summary = found["summary"]
    assert (summary["leads"], summary["failed"], summary["not_found"]) == (25, 24, 1)
    assert (summary["researched"], summary["cached"]) == (24, 1)
    assert summary["skipped_rows"] == [{"row": 27, "company": "siemens ag", "reason": "duplicate"}]
    assert summary["files"]["csv"] == "out/test.csv"
    assert found["written"] == sorted(found["written"])  # input order, whatever the row order
    assert (project.root / "out/test.csv").exists()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict[str, Any]]:
    """The example's one command, run once for the tests below: (project, its summary)."""
    project = _project(tmp_path_factory.mktemp("lead-enrichment"))
    return project, project.demo()


def test_the_batch_replays_offline_with_the_recorded_accuracy(
    batch: tuple[Project, dict[str, Any]],
) -> None:
    project, summary = batch
    assert {
        k: summary[k] for k in ("leads", "enriched", "not_found", "failed", "researched", "cached")
    } == {"leads": 25, "enriched": 22, "not_found": 1, "failed": 2, "researched": 25, "cached": 0}
    assert summary["identifiers"] == {"valid": 16, "invalid": 2, "unchecked": 1, "missing": 6}
    assert {f["lead_key"] for f in summary["failures"]} == {"heineken-nv-nl", "inditex-es"}
    rows = {
        r["lead_key"]: r
        for r in map(json.loads, (project.root / "out/enriched.jsonl").read_text().splitlines())
    }
    injected = rows["novo-nordisk-a-s-dk"]  # a search result told the model to say "Crypto"
    assert injected["industry"] == "Pharmaceuticals" and injected["confidence"] < 1
    assert rows["nokia-oyj-fi"]["headcount_band"] == "10001+"  # corrected after one rejection
    assert rows["volkswagen-ag-de"]["identifier_problem"] == "checksum"
    assert rows["basf-se-de"]["identifier_problem"] == "format"
    assert all(url for url in rows["siemens-ag-de"]["sources"].values())
    assert project.evaluate() == 0


def test_the_fan_out_is_concurrent_branches_of_one_trace(
    batch: tuple[Project, dict[str, Any]],
) -> None:
    """The trace shows the batch as it ran: under the manager's one ``run_parallel`` span,
    a branch per delegation, in the same trace as the specialists' runs, and many of them
    in flight at the same moment (16 at most)."""
    project, _ = batch
    spans = read_spans(Path(project.env["MESH_TRACE_DIR"]))
    (fan_out,) = [s for s in spans if s.name == "execute_tool run_parallel"]
    branches = [s for s in spans if s.parent_id == fan_out.span_id]
    assert {s.name for s in branches} == {"execute_tool research_specialist",
                                          "execute_tool validation_specialist"}  # fmt: skip
    assert len(branches) == 25 + 19
    assert {s.trace_id for s in spans if s.service != "manager"} == {fan_out.trace_id}
    edges = sorted([(s.start_ns, 1) for s in branches] + [(s.end_ns, -1) for s in branches])
    in_flight = max(itertools.accumulate(step for _, step in edges))
    assert 8 <= in_flight <= 16


def test_a_rerun_skips_every_lead_already_enriched(batch: tuple[Project, dict[str, Any]]) -> None:
    project, first = batch
    again = project.demo()
    # Only the leads that failed are researched again; the others come from the memo.
    assert again["researched"] == first["failed"] == 2
    assert again["cached"] == first["enriched"] + first["not_found"]
    assert again["failed"] == 2 and again["leads"] == 25
    assert project.evaluate() == 0  # cached leads carry their fields into the output
    refreshed = project.demo(REFRESH_TASK)
    assert (refreshed["researched"], refreshed["cached"]) == (25, 0)
