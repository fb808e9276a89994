# ruff: noqa: E501  (the parametrized cases read best one per line)
"""The mesh config: the bundled one loads, and every wrong field is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.errors import ConfigError
from mesh.project import BUILTIN_TOOLS, build_agent, load_mesh_config
from mesh.rpc.client import channel_target
from tests.mesh_setup import SEED_CONFIG

GOOD = """
[mesh]
entry = "boss"
[agents.boss]
kind = "code"
description = "Boss."
address = "127.0.0.1:7000"
managed_agents = ["helper"]
[agents.helper]
kind = "tool-calling"
description = "Helps."
address = ["127.0.0.1:7001", "127.0.0.1:7002"]
tools = ["factorial"]
[agents.helper.sandbox]
memory_mb = 128
wall_seconds = 5
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return load_mesh_config(path)


def test_the_seed_mesh_loads() -> None:
    config = load_mesh_config(SEED_CONFIG)
    assert config.entry == "manager"
    assert config.dependency_order() == ["research_specialist", "math_specialist", "manager"]
    assert config.agent("math_specialist").sandbox.memory_mb == 256
    assert config.task.startswith("In which year was gRPC open-sourced?")


def test_a_good_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(tmp_path, GOOD)
    helper = config.agent("helper")  # type: ignore[attr-defined]
    assert helper.addresses == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert (helper.sandbox.memory_mb, helper.sandbox.wall_seconds) == (128, 5.0)
    assert helper.budget is None
    monkeypatch.setenv("MESH_ADDRESS_HELPER", "10.0.0.5:9000,10.0.0.6:9000")
    assert load(tmp_path, GOOD).agent("helper").addresses == (  # type: ignore[attr-defined]
        "10.0.0.5:9000",
        "10.0.0.6:9000",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('kind = "code"', 'kind = "python"'), "agents.boss.kind: must be one of code, tool-calling"),
        (('tools = ["factorial"]', 'tools = ["teleport"]'), "agents.helper.tools[0]: unknown tool 'teleport'; built-in tools: celsius_to_fahrenheit"),
        (('managed_agents = ["helper"]', 'managed_agents = ["ghost"]'), "agents.boss.managed_agents: no agent 'ghost'"),
        (('address = "127.0.0.1:7000"', 'address = "nowhere"'), "agents.boss.address: 'nowhere' is not host:port"),
        (('description = "Boss."', 'descripton = "Boss."'), "agents.boss.descripton: unknown field"),
        (('tools = ["factorial"]', 'tools = ["factorial", "pkg.mod:not a name"]'), "agents.helper.tools[1]: 'pkg.mod:not a name' is not an import path like 'package.module:name' or 'package.module'"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nagent = "pkg.mod"'), "agents.helper.agent: 'pkg.mod' is not an import path like 'package.module:function'"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\ninstructions = "x"\ninstructions_file = "x.md"'), "agents.helper: give instructions or instructions_file, not both"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\ninstructions_file = "missing.md"'), "agents.helper.instructions_file: cannot read"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nmodel_params = { api_key = "sk" }'), "agents.helper.model_params.api_key: set by smolmesh, not a model parameter"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nremote_tools = [{ tools = ["x"] }]'), "agents.helper.remote_tools[0]: give agent (a mesh agent) or address (host:port), one only"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nremote_tools = [{ agent = "ghost" }]'), "agents.helper.remote_tools[0].agent: no agent 'ghost'"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nremote_tools = [{ address = "nowhere" }]'), "agents.helper.remote_tools[0].address: 'nowhere' is not host:port"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nremote_tools = [{ agent = "boss" }]'), "cycle"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nremote_tools = [{ address = "127.0.0.1:9", untrusted = "no" }]'), "agents.helper.remote_tools[0].untrusted: expected bool"),
        (('memory_mb = 128', 'memory_mb = "lots"'), "agents.helper.sandbox.memory_mb: expected int"),
        (('wall_seconds = 5', 'wall_seconds = -1'), "agents.helper.sandbox: sandbox wall_seconds must be positive"),
        (('wall_seconds = 5', 'wallclock = 5'), "agents.helper.sandbox.wallclock: unknown field"),
        (('wall_seconds = 5', 'pool_size = 4'), "agents.helper.sandbox.pool_size: jails are no longer pooled"),
        (('entry = "boss"', 'entry = "chief"'), "mesh.entry: no agent 'chief'"),
        (('[agents.boss]', '[models]\nretries = -1\n[agents.boss]'), "models.retries: must be 0 or more, got -1"),
        (('[agents.boss]', '[models]\nretry_delay_s = "soon"\n[agents.boss]'), "models.retry_delay_s: expected"),
        (('[agents.helper]\nkind', '[agents.helper]\nmax_steps = 0\nkind'), "agents.helper.max_steps: must be at least 1"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nmanaged_agents = ["boss"]'), "cycle"),
        (('description = "Helps."', ''), "agents.helper.description: required"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\nrate_limit_rpm = "fast"'), "agents.helper.rate_limit_rpm: expected int"),
        (('tools = ["factorial"]', 'tools = ["factorial"]\ncache = "yes"'), "agents.helper.cache: expected bool"),
        (('[agents.helper.sandbox]', 'budget = 5\n[agents.helper.sandbox]'), "agents.helper.budget: expected a table"),
        (('[agents.helper.sandbox]', '[agents.helper.budget]\nmax_dollars = 1\n[agents.helper.sandbox]'), "agents.helper.budget: unknown budget field(s) ['max_dollars']"),
    ],
)  # fmt: skip
def test_a_wrong_field_is_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, GOOD.replace(*change))
    assert message in err.value.message


def test_model_retries_are_configured(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert (config.model_retries, config.model_retry_delay_s) == (3, 1.0)  # type: ignore[attr-defined]
    tuned = load(
        tmp_path,
        GOOD.replace("[agents.boss]", "[models]\nretries = 1\nretry_delay_s = 0.2\n[agents.boss]"),
    )
    assert (tuned.model_retries, tuned.model_retry_delay_s) == (1, 0.2)  # type: ignore[attr-defined]
    model = build_agent(tuned, "helper").model  # type: ignore[arg-type]
    assert (model.retry.max_retries, model.retry.initial_delay_s) == (1, 0.2)  # type: ignore[attr-defined]


def test_remote_tools_are_untrusted_unless_the_config_trusts_them(tmp_path: Path) -> None:
    """The wire does not say which tools are untrusted where they run: the safe side."""
    remote = ('remote_tools = [{ address = "127.0.0.1:9" }, '
              '{ address = "127.0.0.1:9", untrusted = false }]')  # fmt: skip
    config = load(
        tmp_path, GOOD.replace('tools = ["factorial"]', f'tools = ["factorial"]\n{remote}')
    )
    helper = config.agent("helper")  # type: ignore[attr-defined]
    assert [r.untrusted for r in helper.remote_tools] == [True, False]


def test_unreadable_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read mesh config"):
        load_mesh_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(tmp_path, "[agents\n")


def test_every_built_in_tool_can_be_named() -> None:
    assert set(BUILTIN_TOOLS) == {"celsius_to_fahrenheit", "factorial", "smallest_prime_factor", "memo",
                          "web_search"}  # fmt: skip


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("specialists.mesh.svc:50051", "dns:///specialists.mesh.svc:50051"),
        (["127.0.0.1:1", "127.0.0.1:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (["[::1]:1", "[::1]:2"], "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_channel_targets(addresses: str | list[str], target: str) -> None:
    assert channel_target(addresses) == target


def test_replicas_must_be_ip_addresses() -> None:
    with pytest.raises(ValueError, match="must be IP:port"):
        channel_target(["a.example:1", "b.example:1"])


def test_rate_limit_budget_and_cache_wrap_the_agent(tmp_path: Path) -> None:
    from mesh.agents.budget import Budget
    from mesh.models import CachingModel, RateLimitedModel
    from mesh.project import build_agent

    text = GOOD.replace("[mesh]", '[mesh]\nreplay = "always"').replace(
        'tools = ["factorial"]',
        'tools = ["factorial"]\ncassette = "c.jsonl"\nrate_limit_rpm = 30\ncache = true\n'
        "budget = { max_tokens = 5000, max_model_calls = 9 }",
    )
    (tmp_path / "c.jsonl").write_text("")
    agent = build_agent(load(tmp_path, text), "helper")  # type: ignore[arg-type]
    assert isinstance(agent.model, CachingModel)
    assert isinstance(agent.model.model, RateLimitedModel) and agent.model.model.rpm == 30
    assert agent.budget == Budget(max_tokens=5000, max_model_calls=9)


def test_planning_interval_reaches_the_agent_built(tmp_path: Path) -> None:
    text = GOOD.replace('tools = ["factorial"]', 'tools = ["factorial"]\nplanning_interval = 3')
    path = tmp_path / "mesh.toml"
    path.write_text(text.replace('address = ["127.0.0.1:7001", "127.0.0.1:7002"]',
                                 'address = "127.0.0.1:7001"'))  # fmt: skip
    config = load_mesh_config(path)
    assert config.agent("helper").planning_interval == 3
    assert config.agent("boss").planning_interval is None
    agent = build_agent(config, "helper")
    assert agent.planning_interval == 3
    with pytest.raises(ConfigError, match="planning_interval"):
        load(tmp_path, GOOD.replace('tools = ["factorial"]', 'tools = ["factorial"]\n'
                                    "planning_interval = -1"))  # fmt: skip
