"""docs/config.md names exactly the fields the config accepts: a field added to the code
without its line in the reference, or a line for a field that does not exist, fails here."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from mesh.agents.budget import BUDGET_FIELDS
from mesh.config import (
    A2A_AGENT_KEYS,
    A2A_SERVE_KEYS,
    AGENT_KEYS,
    MESH_KEYS,
    MODELS_KEYS,
    REMOTE_TOOLS_KEYS,
)
from mesh.mcp.config import MCP_KEYS
from mesh.rpc.security import AUTH_KEYS
from mesh.sandbox.config import SandboxConfig

REFERENCE = Path(__file__).parent.parent / "docs" / "config.md"
ACCEPTED = {
    "[mesh]": MESH_KEYS,
    "[models]": MODELS_KEYS,
    "[agents.NAME]": AGENT_KEYS,
    "[[agents.NAME.mcp]]": MCP_KEYS,
    "[[agents.NAME.remote_tools]]": REMOTE_TOOLS_KEYS,
    "[[agents.NAME.a2a_agents]]": A2A_AGENT_KEYS,
    "[agents.NAME.a2a]": A2A_SERVE_KEYS,
    "[agents.NAME.sandbox]": {f.name for f in fields(SandboxConfig)},
    "[agents.NAME.budget]": BUDGET_FIELDS,
    "[auth]": AUTH_KEYS,
}
FREE_FORM = {"[agents.NAME.model_params]"}  # any field: described in prose


def documented() -> dict[str, set[str]]:
    """Each ``## `[table]``` section's fields: the first cell of its table rows."""
    tables: dict[str, set[str]] = {}
    current = None
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"## `(\[.*\])`", line):
            current = heading.group(1)
            tables[current] = set()
        elif line.startswith("## "):
            current = None
        elif current and (row := re.match(r"\| `(\w+)` \|", line)):
            tables[current].add(row.group(1))
    return tables


def test_every_table_is_documented_and_nothing_else() -> None:
    assert set(documented()) == set(ACCEPTED) | FREE_FORM


def test_every_field_is_documented_and_no_other() -> None:
    tables = documented()
    for table, accepted in ACCEPTED.items():
        assert tables[table] == set(accepted), table


def test_sub_tables_of_an_agent_are_fields_of_it() -> None:
    sub_tables = {t.strip("[]").removeprefix("agents.NAME.") for t in [*ACCEPTED, *FREE_FORM]
                  if t.strip("[]").startswith("agents.NAME.")}  # fmt: skip
    assert sub_tables <= AGENT_KEYS
