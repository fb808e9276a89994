"""Reading a remote A2A agent's card: where it is, what it is called, how to reach it.

A card comes from a server we do not control, so it is read like any remote
input: with a short timeout, at most ``MAX_CARD_BYTES``, parsed by the A2A SDK
(which also maps the 0.3 card layout to 1.0), and every error names the URL,
clipped, never the body. What the card says reaches the manager's model as
the agent's tool description, so that is clipped too: the name becomes a
tool name (an ASCII identifier), the description and skills a few lines.
"""

from __future__ import annotations

import keyword
import re
from urllib.parse import urlsplit

import httpx
from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2 as a2a
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, TransportProtocol
from google.protobuf.json_format import ParseError

from mesh import untrusted_json
from mesh.errors import AgentUnavailableError, ConfigError, RemoteAgentError
from mesh.text import clip

__all__ = [
    "BINDINGS",
    "MAX_CARD_BYTES",
    "agent_name",
    "card_location",
    "describe",
    "fetch_card",
    "usable_interfaces",
]

MAX_CARD_BYTES = 1 << 20
BINDINGS = (TransportProtocol.GRPC.value, TransportProtocol.JSONRPC.value,
            TransportProtocol.HTTP_JSON.value)  # fmt: skip
"""The protocol bindings we call, in order of preference: gRPC, then whatever the SDK
speaks as well, so that an agent without gRPC is still reachable."""
MAX_DESCRIPTION_CHARS = 600
MAX_SKILLS = 8
MAX_SKILL_CHARS = 160
MAX_NAME_CHARS = 64


def card_location(url: str) -> str:
    """The card's URL: ``url`` itself when it names a card, else the well-known path
    under it (``http://host:port`` → ``http://host:port/.well-known/agent-card.json``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"A2A card URL {clip(url, 120)!r}: expected http(s)://host[:port]/...")
    if parts.path.endswith(".json"):
        return url.strip()
    return url.strip().rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH


def fetch_card(url: str, timeout_s: float = 5.0) -> a2a.AgentCard:
    """The card at ``url`` (see ``card_location``), checked to have an interface we speak.

    AgentUnavailableError (retryable) when its server cannot be reached or fails;
    RemoteAgentError when what it serves is no usable card."""
    location = card_location(url)
    shown = clip(location, 120)
    try:
        card = parse_agent_card(untrusted_json.loads(_get(location, shown, timeout_s)))
    except (ValueError, ParseError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise RemoteAgentError(f"{shown} serves no valid A2A agent card") from err
    if not usable_interfaces(card):
        offered = sorted({clip(i.protocol_binding, 30) for i in card.supported_interfaces})
        raise RemoteAgentError(
            f"the A2A agent card at {shown} has no interface we can call (it offers "
            f"{', '.join(offered[:5]) or 'none'}; we speak {', '.join(BINDINGS)})"
        )
    return card


def _get(location: str, shown: str, timeout_s: float) -> bytes:
    """The body at ``location``, at most ``MAX_CARD_BYTES`` of it."""
    body = bytearray()
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=True, max_redirects=3) as http,
            http.stream("GET", location, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                kind = AgentUnavailableError if response.status_code >= 500 else RemoteAgentError
                raise kind(f"no A2A agent card at {shown}: HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CARD_BYTES:
                    raise RemoteAgentError(f"the A2A agent card at {shown} is over "
                                           f"{MAX_CARD_BYTES} bytes")  # fmt: skip
    except httpx.HTTPError as err:
        raise AgentUnavailableError(
            f"cannot fetch the A2A agent card at {shown}: {type(err).__name__}"
        ) from err
    return bytes(body)


def usable_interfaces(card: a2a.AgentCard) -> list[a2a.AgentInterface]:
    """The card's interfaces we can call, the preferred binding first."""
    found = [i for i in card.supported_interfaces if i.protocol_binding in BINDINGS and i.url]
    return sorted(found, key=lambda i: BINDINGS.index(i.protocol_binding))


def agent_name(card: a2a.AgentCard) -> str:
    """The card's name as a tool name: lower-case ASCII letters, digits and underscores."""
    name = re.sub(r"[^a-z0-9]+", "_", card.name.lower()).strip("_")[:MAX_NAME_CHARS] or "agent"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"a2a_{name}"[:MAX_NAME_CHARS]
    return name


def describe(card: a2a.AgentCard) -> str:
    """The tool description of the agent: the card's description, then its skills."""
    lines = [clip(card.description or card.name or "An A2A agent.", MAX_DESCRIPTION_CHARS,
                  one_line=True)]  # fmt: skip
    skills = [
        clip(f"{skill.name or skill.id}: {skill.description}".strip(": "), MAX_SKILL_CHARS,
             one_line=True)
        for skill in card.skills[:MAX_SKILLS]
    ]  # fmt: skip
    if skills:
        more = len(card.skills) - MAX_SKILLS
        lines.append("Skills: " + "; ".join(skills) + (f"; and {more} more" if more > 0 else ""))
    return "\n".join(lines)
