"""The governance trail of an agent's definition: its instructions and tool schemas.

When a service starts with instructions or tool schemas that differ from its
last start, the change goes into the same append-only log as run-time tool
changes (``mesh changes`` reads both): which tool appeared, went or changed
schema (old and new SHA-256), and for instructions the old and new SHA-256
and a unified diff. Each start that changed something ends with a
``configured`` record holding the whole definition, which the next start
compares against. Run-time changes (AddTool) are not part of it: they are
logged when made, and replayed over the configured tools.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Mapping
from typing import Any

from mesh.agents.base import MultiStepAgent
from mesh.rpc.tool_admin import ChangeLog, schema_sha256
from mesh.rpc.tool_change import ToolChange
from mesh.text import clip
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["definition_of", "record_definition"]

MAX_DIFF_CHARS = 20_000
CALLER = "config"


def definition_of(agent: MultiStepAgent) -> dict[str, Any]:
    """What the model is told about this agent: instructions and each tool's schema hash."""
    tools = {name: schema_sha256(tool.to_json_schema()) for name, tool in agent.tools.items()
             if name != FINAL_ANSWER}  # fmt: skip
    return {"instructions": agent.instructions or "", "tools": dict(sorted(tools.items()))}


def record_definition(agent: MultiStepAgent, log: ChangeLog) -> list[ToolChange]:
    """Append what changed since the last recorded start (nothing if nothing did). Replicas
    starting at once take turns (``log.exclusive``): the first records the change, the
    others find it recorded."""
    with log.exclusive():
        return _record_changes(agent, log)


def _record_changes(agent: MultiStepAgent, log: ChangeLog) -> list[ToolChange]:
    current = definition_of(agent)
    previous = next((c.definition for c in reversed(log.read()) if c.action == "configured"), None)
    if previous == current:
        return []
    now = time.time()

    def change(action: str, tool: str = "", **fields: Any) -> ToolChange:
        return ToolChange(timestamp=now, agent=agent.name, action=action, tool=tool,
                          caller=CALLER, **fields)  # fmt: skip

    changes = [] if previous is None else _differences(previous, current, change)
    changes.append(change("configured", schema_sha256=_sha(current["instructions"]),
                          definition=current))  # fmt: skip
    for record in changes:
        log.append(record)
    return changes


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], change: Any) -> list[ToolChange]:
    out = []
    old_text, new_text = str(old.get("instructions", "")), str(new["instructions"])
    if old_text != new_text:
        diff = "\n".join(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(),
                                              "instructions (before)", "instructions (now)",
                                              lineterm="")) + "\n"  # fmt: skip
        out.append(change("instructions_changed", old_sha256=_sha(old_text),
                          schema_sha256=_sha(new_text),
                          diff=clip(diff, MAX_DIFF_CHARS)))  # fmt: skip
    old_tools: Mapping[str, str] = old.get("tools", {})
    new_tools: Mapping[str, str] = new["tools"]
    for name in sorted(set(old_tools) | set(new_tools)):
        before, after = old_tools.get(name), new_tools.get(name)
        if before is None:
            out.append(change("tool_configured", name, schema_sha256=after))
        elif after is None:
            out.append(change("tool_unconfigured", name, old_sha256=before))
        elif before != after:
            out.append(change("tool_schema_changed", name, old_sha256=before, schema_sha256=after))
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
