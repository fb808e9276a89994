"""The research specialist's factory: a replayed run searches a bundled corpus.

A recorded run must find the same facts when it replays offline, so web
search reads ``search_corpus.jsonl`` then; a live run searches the web.
"""

from __future__ import annotations

from pathlib import Path

from mesh import DuckDuckGoTool, MultiStepAgent, ResolvedAgent
from mesh.tools import CorpusBackend

CORPUS = Path(__file__).with_name("search_corpus.jsonl")


def build(parts: ResolvedAgent) -> MultiStepAgent:
    if not parts.replay:
        return parts.build()
    offline = DuckDuckGoTool(backend=CorpusBackend(CORPUS))
    return parts.build(tools=[offline if t.name == offline.name else t for t in parts.tools])
