"""The A2A agent card of a mesh agent: what the A2A ecosystem reads before calling it.

Skills are the agent itself (its description) and each of its tools and
managed agents: A2A has no typed tool schema, so the schemas, which are
smolmesh's and which A2A would lose, travel in a card extension
(``TOOL_SCHEMAS_EXTENSION``) that any client may read and none must
understand. Capabilities are declared as they are: streaming yes; push
notifications and an extended card no (their methods answer the errors the
spec names). Security schemes say what the mesh's server checks: a bearer
token when it has tokens, a client certificate when it requires one.
"""

from __future__ import annotations

from a2a.types import a2a_pb2 as a2a
from google.protobuf import struct_pb2

from mesh.agents.base import MultiStepAgent
from mesh.files import FILE_KEY
from mesh.models.images import MEDIA_TYPES
from mesh.rpc.security import MeshSecurity
from mesh.text import clip
from mesh.tools.final_answer import FINAL_ANSWER
from mesh.tools.schema import json_schema
from mesh.version import __version__

__all__ = ["PROTOCOL_VERSION", "TOOL_SCHEMAS_EXTENSION", "agent_card"]

PROTOCOL_VERSION = "1.0"
TOOL_SCHEMAS_EXTENSION = "urn:smolmesh:a2a:tool-schemas:v1"
MAX_SKILL_DESCRIPTION_CHARS = 1000
INPUT_MODES = ["text/plain", "application/json", *sorted(MEDIA_TYPES)]
OUTPUT_MODES = ["text/plain", "application/json", "application/octet-stream"]


def agent_card(
    agent: MultiStepAgent, grpc_url: str, security: MeshSecurity | None = None
) -> a2a.AgentCard:
    """The card of ``agent``, served over A2A's gRPC binding at ``grpc_url``."""
    card = a2a.AgentCard(
        name=agent.name,
        description=agent.description or f"The smolmesh agent {agent.name}.",
        version=__version__,
        provider=a2a.AgentProvider(organization="smolmesh", url="https://github.com/smolmesh"),
        supported_interfaces=[
            a2a.AgentInterface(
                url=grpc_url,
                protocol_binding="GRPC",
                protocol_version=PROTOCOL_VERSION,
            )
        ],
        capabilities=a2a.AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extended_agent_card=False,
            extensions=[_tool_schemas(agent)],
        ),
        default_input_modes=INPUT_MODES,
        default_output_modes=OUTPUT_MODES,
        skills=_skills(agent),
    )
    _declare_security(card, security)
    return card


def _skills(agent: MultiStepAgent) -> list[a2a.AgentSkill]:
    skills = [a2a.AgentSkill(
        id=agent.name, name=agent.name, tags=["agent"],
        description=clip(agent.description or agent.name, MAX_SKILL_DESCRIPTION_CHARS),
    )]  # fmt: skip
    helpers = [(name, tool.description, "tool") for name, tool in agent.tools.items()
               if name != FINAL_ANSWER]  # fmt: skip
    helpers += [(name, member.description, "team member")
                for name, member in agent.managed_agents.items()]  # fmt: skip
    for name, description, tag in helpers:
        skills.append(a2a.AgentSkill(
            id=f"{agent.name}.{name}", name=name, tags=[tag],
            description=clip(description or name, MAX_SKILL_DESCRIPTION_CHARS),
        ))  # fmt: skip
    return skills


def _tool_schemas(agent: MultiStepAgent) -> a2a.AgentExtension:
    """The tools' typed schemas, and how a file answer looks (``mesh.files``)."""
    params = struct_pb2.Struct()
    params.update({
        "tools": {
            name: {
                "description": tool.description,
                "parameters": json_schema(tool.input_specs),
                "output_type": tool.output_type,
            }
            for name, tool in agent.tools.items()
            if name != FINAL_ANSWER
        },
        "file_answer_key": FILE_KEY,
    })  # fmt: skip
    return a2a.AgentExtension(
        uri=TOOL_SCHEMAS_EXTENSION,
        description="The agent's tools with their typed JSON schemas (smolmesh).",
        required=False,
        params=params,
    )


def _declare_security(card: a2a.AgentCard, security: MeshSecurity | None) -> None:
    if security is None:
        return
    requirement = a2a.SecurityRequirement()
    if security.tokens:
        card.security_schemes["bearer"].http_auth_security_scheme.CopyFrom(
            a2a.HTTPAuthSecurityScheme(
                scheme="Bearer", description="A token the mesh issued to the caller."
            )
        )
        requirement.schemes["bearer"].CopyFrom(a2a.StringList())
    if security.tls and security.require_client_cert:
        card.security_schemes["mtls"].mtls_security_scheme.CopyFrom(
            a2a.MutualTlsSecurityScheme(description="A client certificate the mesh's CA signed.")
        )
        requirement.schemes["mtls"].CopyFrom(a2a.StringList())
    if requirement.schemes:
        card.security_requirements.append(requirement)
