"""A user's project: tools by import path, agent factories, instructions from files, model
parameters, and the governance trail of an agent's definition.

Each test writes its project under a package name of its own, so that projects built in
this one process never share a module.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from mesh import CodeAgent, LiteLLMModel, ToolCallingAgent
from mesh.errors import ConfigError
from mesh.project import build_agent, load_mesh_config
from mesh.rpc.definition_log import record_definition
from mesh.rpc.tool_admin import ToolAdmin, ToolChangeLog

TOOLS_PY = '''
"""Tools of a user's own, in every form a user writes them."""
from mesh import Tool, factorial, tool


@tool
def shout(text: str) -> str:
    """Upper-cases text.

    Args:
        text: What to shout.
    """
    return text.upper()


class Reverse(Tool):
    name = "reverse"
    description = "Reverses text."
    inputs = {"text": {"type": "string", "description": "What to reverse."}}
    output_type = "string"

    def forward(self, text: str) -> str:
        return text[::-1]


reverse_tool = Reverse()
not_a_tool = 42


def undecorated(text: str) -> str:
    return text
'''


def project(
    tmp_path: Path, agent_table: str, files: dict[str, str] | None = None
) -> tuple[Path, str]:
    """A project whose package is ``pkg`` (a fresh name); returns (mesh.toml, pkg)."""
    pkg = f"proj_{uuid.uuid4().hex[:12]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "tools.py").write_text(TOOLS_PY)
    for name, text in (files or {}).items():
        (tmp_path / pkg / name).write_text(textwrap.dedent(text))
    config = tmp_path / "mesh.toml"
    config.write_text(
        textwrap.dedent("""
        [mesh]
        replay = "always"
        [agents.helper]
        kind = "tool-calling"
        description = "Helps."
        address = "127.0.0.1:7001"
        cassette = "c.jsonl"
    """)
        + textwrap.dedent(agent_table).replace("PKG", pkg)
    )
    (tmp_path / "c.jsonl").write_text("")
    return config, pkg


def build(config: Path) -> ToolCallingAgent:
    agent = build_agent(load_mesh_config(config), "helper")
    assert isinstance(agent, ToolCallingAgent)
    return agent


def test_tools_by_import_path_in_every_form(tmp_path: Path) -> None:
    config, _ = project(tmp_path, 'tools = ["factorial", "PKG.tools:shout", "PKG.tools:Reverse"]\n')
    agent = build(config)
    assert list(agent.tools) == ["factorial", "shout", "reverse", "final_answer"]
    assert agent.tools["shout"]("hi") == "HI"
    assert agent.tools["reverse"]("abc") == "cba"


def test_a_module_path_takes_every_tool_it_defines_but_not_those_it_imports(
    tmp_path: Path,
) -> None:
    config, pkg = project(tmp_path, 'tools = ["PKG.own"]\n')
    (tmp_path / pkg / "own.py").write_text(
        textwrap.dedent(f'''
        from mesh import factorial, tool
        from {pkg}.tools import Reverse


        @tool
        def double(n: int) -> int:
            """Twice n.

            Args:
                n: A number.
            """
            return 2 * n
    ''')
    )
    assert list(build(config).tools) == ["double", "final_answer"]
    (tmp_path / "again").mkdir()
    config, _ = project(tmp_path / "again", 'tools = ["PKG.tools"]\n')
    # Reverse (the class) and reverse_tool (an instance of it) are both this module's
    # tools, under one name: that is a clash the user must resolve.
    with pytest.raises(ConfigError, match=r"agents.helper.tools\[0\] \(reverse_tool\): a second "
                                          r"tool named 'reverse'"):  # fmt: skip
        build(config)


def test_a_module_with_all_exports_exactly_those(tmp_path: Path) -> None:
    config, pkg = project(tmp_path, 'tools = ["PKG.picked"]\n')
    (tmp_path / pkg / "picked.py").write_text(
        f"from {pkg}.tools import reverse_tool, shout\n__all__ = ['shout', 'reverse_tool']\n"
    )
    assert list(build(config).tools) == ["shout", "reverse", "final_answer"]


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ('["PKG.missing"]', "agents.helper.tools[0]: cannot import 'PKG.missing': "
                            "ModuleNotFoundError"),
        ('["PKG.tools:nothing"]', "agents.helper.tools[0]: module 'PKG.tools' has no 'nothing'"),
        ('["PKG.tools:not_a_tool"]', "agents.helper.tools[0]: 'int' is a int, not a tool"),
        ('["PKG.tools:undecorated"]', "'undecorated' is a function, not a tool (decorate it "
                                      "with @tool)"),
        ('["factorial", "PKG.tools:shout", "PKG.tools:shout"]',
         "agents.helper.tools[2]: a second tool named 'shout' (the first came from "
         "agents.helper.tools[1])"),
        ('["PKG.broken"]', "agents.helper.tools[0]: cannot import 'PKG.broken': "
                           "ZeroDivisionError: division by zero"),
    ],
)  # fmt: skip
def test_a_bad_tool_reference_fails_at_start_naming_the_field_and_the_cause(
    tmp_path: Path, tools: str, message: str
) -> None:
    config, pkg = project(tmp_path, f"tools = {tools}\n", {"broken.py": "x = 1 / 0\n"})
    with pytest.raises(ConfigError) as err:
        build(config)
    assert message.replace("PKG", pkg) in err.value.message
    assert "Traceback" not in err.value.message


FACTORY = '''
from mesh import ResolvedAgent, ToolCallingAgent, CodeAgent


def build(parts: ResolvedAgent) -> ToolCallingAgent:
    """Keeps the configured tools but one, and changes the step limit."""
    tools = [t for t in parts.tools if t.name != "factorial"]
    agent = parts.build(tools=tools, max_steps=3)
    agent.seen = (parts.name, parts.replay, parts.config.description, parts.root)
    return agent


def wrong_kind(parts: ResolvedAgent) -> CodeAgent:
    return CodeAgent([], parts.model, name=parts.name, executor="unsafe-local")


def renamed(parts: ResolvedAgent) -> ToolCallingAgent:
    return parts.build(name="someone_else")


def fails(parts: ResolvedAgent) -> ToolCallingAgent:
    raise RuntimeError("the factory is broken")
'''


def test_an_agent_factory_receives_the_resolved_parts(tmp_path: Path) -> None:
    config, _ = project(
        tmp_path,
        'tools = ["factorial", "PKG.tools:shout"]\nagent = "PKG.agent:build"\n',
        {"agent.py": FACTORY},
    )
    agent = build(config)
    assert list(agent.tools) == ["shout", "final_answer"]
    assert agent.max_steps == 3
    assert agent.seen == ("helper", True, "Helps.", tmp_path)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("wrong_kind", "agents.helper.agent: returned CodeAgent, but kind = 'tool-calling' needs "
                       "a ToolCallingAgent"),
        ("renamed", "agents.helper.agent: the agent is named 'someone_else', not 'helper'"),
        ("fails", "agents.helper.agent: PKG.agent:fails failed: RuntimeError: the factory is "
                  "broken"),
        ("absent", "agents.helper.agent: module 'PKG.agent' has no 'absent'"),
    ],
)  # fmt: skip
def test_a_factory_that_misbehaves_is_named(tmp_path: Path, factory: str, message: str) -> None:
    config, pkg = project(tmp_path, f'agent = "PKG.agent:{factory}"\n', {"agent.py": FACTORY})
    with pytest.raises(ConfigError) as err:
        build(config)
    assert message.replace("PKG", pkg) in err.value.message


def test_instructions_from_a_file_and_model_parameters(tmp_path: Path) -> None:
    config, _ = project(tmp_path, 'instructions_file = "PKG/instructions.md"\n'
                                  'model = "openai/gpt-4o-mini"\n'
                                  "model_params = { temperature = 0.2, max_tokens = 300 }\n",
                          {"instructions.md": "Answer in French.\n"})  # fmt: skip
    text = config.read_text().replace('replay = "always"', 'replay = "never"')
    config.write_text(text)
    agent = build(config)
    assert agent.instructions == "Answer in French."
    assert isinstance(agent.model, LiteLLMModel)
    assert agent.model.completion_kwargs == {"temperature": 0.2, "max_tokens": 300}


def test_a_code_agent_from_the_config_gets_its_sandbox(tmp_path: Path) -> None:
    config, _ = project(tmp_path, "")
    text = config.read_text().replace('kind = "tool-calling"', 'kind = "code"')
    config.write_text(text + "[agents.helper.sandbox]\nmemory_mb = 128\n")
    agent = build_agent(load_mesh_config(config), "helper")
    assert isinstance(agent, CodeAgent) and agent.sandbox.memory_mb == 128


def test_a_changed_definition_is_recorded_once_with_hashes_and_a_diff(tmp_path: Path) -> None:
    config, pkg = project(tmp_path, 'tools = ["factorial", "PKG.tools:shout"]\n'
                                    'instructions_file = "PKG/instructions.md"\n',
                          {"instructions.md": "Be brief.\nCite sources.\n"})  # fmt: skip
    log = ToolChangeLog(tmp_path / "changes.jsonl")
    first = record_definition(build(config), log)
    assert [c.action for c in first] == ["configured"]
    assert record_definition(build(config), log) == []  # unchanged: nothing appended
    (tmp_path / pkg / "instructions.md").write_text("Be brief.\nCite two sources.\n")
    config.write_text(config.read_text().replace('"PKG.tools:shout"'.replace("PKG", pkg),
                                                 f'"{pkg}.tools:Reverse"'))  # fmt: skip
    changes = record_definition(build(config), log)
    actions = {c.action: c for c in changes}
    assert list(actions) == ["instructions_changed", "tool_configured", "tool_unconfigured",
                             "configured"]  # fmt: skip
    instructions = actions["instructions_changed"]
    assert instructions.old_sha256 == first[0].schema_sha256
    assert instructions.schema_sha256 != instructions.old_sha256
    assert "-Cite sources.\n+Cite two sources.\n" in instructions.diff
    assert actions["tool_configured"].tool == "reverse"
    assert actions["tool_unconfigured"].tool == "shout"
    # Definition records are history, not run-time changes: a restart replays none of them.
    agent = build(config)
    assert ToolAdmin(agent, log).restore() == 0
    assert "shout" not in agent.tools
