"""The A2A card declares what the agent's server really checks, and its tools' schemas."""

from __future__ import annotations

from pathlib import Path

from mesh import ToolCallingAgent
from mesh.rpc.a2a.card import TOOL_SCHEMAS_EXTENSION, agent_card
from mesh.rpc.security import MeshSecurity
from services.a2a_conformance.agent import ConformanceModel, WaitTool


def agent() -> ToolCallingAgent:
    return ToolCallingAgent([WaitTool()], ConformanceModel(), name="waiter",
                            description="Waits.")  # fmt: skip


def test_an_open_server_declares_no_security() -> None:
    card = agent_card(agent(), "127.0.0.1:1")
    assert not card.security_schemes and not card.security_requirements
    assert card.capabilities.streaming and not card.capabilities.push_notifications
    assert [i.protocol_binding for i in card.supported_interfaces] == ["GRPC"]


def test_tokens_and_client_certificates_are_declared_as_required(tmp_path: Path) -> None:
    security = MeshSecurity(tls_cert=tmp_path / "cert", tls_key=tmp_path / "key",
                            require_client_cert=True, tokens={"alice": "t" * 32})  # fmt: skip
    card = agent_card(agent(), "mesh.example:443", security)
    bearer = card.security_schemes["bearer"].http_auth_security_scheme
    assert bearer.scheme == "Bearer"
    assert card.security_schemes["mtls"].HasField("mtls_security_scheme")
    (required,) = card.security_requirements
    assert set(required.schemes) == {"bearer", "mtls"}


def test_tls_without_client_certificates_asks_only_for_the_token(tmp_path: Path) -> None:
    security = MeshSecurity(tls_cert=tmp_path / "cert", tls_key=tmp_path / "key",
                            tokens={"alice": "t" * 32})  # fmt: skip
    card = agent_card(agent(), "mesh.example:443", security)
    assert set(card.security_schemes) == {"bearer"}


def test_each_tool_is_a_skill_and_its_schema_travels_in_an_extension() -> None:
    card = agent_card(agent(), "127.0.0.1:1")
    assert {s.name: s.tags[0] for s in card.skills} == {"waiter": "agent", "wait": "tool"}
    (extension,) = card.capabilities.extensions
    assert extension.uri == TOOL_SCHEMAS_EXTENSION and not extension.required
    schema = extension.params["tools"]["wait"]["parameters"]
    assert schema["properties"]["seconds"]["type"] == "number"
