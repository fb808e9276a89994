"""The research specialist's factory: a replayed run searches the bundled corpus.

A recorded run must find the same facts when it replays offline, so web
search reads ``data/search_corpus.jsonl`` then (a snapshot of the pages the
recording saw, one planted prompt injection included); a live run searches
the web through DuckDuckGo. Everything else comes from the config.
"""

from __future__ import annotations

from mesh import DuckDuckGoTool, MultiStepAgent, ResolvedAgent
from mesh.tools import CorpusBackend

CORPUS = "data/search_corpus.jsonl"


def build(parts: ResolvedAgent) -> MultiStepAgent:
    if not parts.replay:
        return parts.build()
    offline = DuckDuckGoTool(backend=CorpusBackend(parts.root / CORPUS))
    return parts.build(tools=[offline if t.name == offline.name else t for t in parts.tools])
