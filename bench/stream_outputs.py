"""How soon a caller sees the model's text with ``stream_outputs``, and what streaming costs.

Run by hand: ``.venv/bin/python bench/stream_outputs.py [ROUNDS]``. A code agent served in
its own process answers through LiteLLM from a replay server that streams a 200-word answer
at 10 ms a piece (a model generating about 100 tokens a second; unstreamed, the whole
answer comes after as long). A client watches the run
over ``RunStream`` ROUNDS times (default 5) with streaming on, then off, and prints the
medians (and min-max) of: the time to the first piece of text, the time to the step's whole
``ModelOutput``, and the run's whole time; also the pieces per run. Asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from mesh import Cassette, ChatMessage, ModelResponse, ReplayServer, TokenUsage
from mesh.agents.events import ModelOutput, ModelOutputDelta
from mesh.models.replay import split_words
from mesh.rpc.client import AgentClient
from tests.support import serving

PIECE_S = 0.01
ANSWER = (
    "Thought: " + " ".join(f"word{n}" for n in range(200)) + "\n```python\nfinal_answer(1)\n```"
)
SERVICE = """
import sys
from mesh import CodeAgent, LiteLLMModel, serve

agent = CodeAgent([], LiteLLMModel("openai/gpt-4o-mini", api_base=sys.argv[2]), name="writer",
                  description="Writes.", stream_outputs=sys.argv[3] == "on")
serve(agent, sys.argv[1])
"""


def watch(address: str, task: str) -> tuple[float | None, float, float, int]:
    """Seconds to the first piece, to the ModelOutput and to the end; pieces seen."""
    first = output = None
    pieces = 0
    started = time.perf_counter()
    with AgentClient([address], agent="writer") as client:
        for event in client.run_stream(task):
            now = time.perf_counter() - started
            if isinstance(event, ModelOutputDelta):
                pieces += 1
                first = now if first is None else first
            elif isinstance(event, ModelOutput) and output is None:
                output = now
    return first, output or 0.0, time.perf_counter() - started, pieces


def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):7.0f} ms ({min(ms):.0f}-{max(ms):.0f})"


def main(rounds: int) -> None:
    cassette = Cassette.from_responses([ModelResponse(ChatMessage("assistant", ANSWER),
                                                      TokenUsage(500, 230))])  # fmt: skip
    generating = len(split_words(ANSWER)) * PIECE_S  # unstreamed, the answer comes whole then
    print(f"{'stream_outputs':<15} {'first text':>24} {'ModelOutput':>24} {'run':>24} pieces")
    for mode in ("on", "off"):
        timing = {"chunk_delay_s": PIECE_S} if mode == "on" else {"latency_s": generating}
        with (
            ReplayServer(cassette, **timing) as server,
            tempfile.TemporaryDirectory() as home,
            serving(SERVICE, Path(home), server.api_base, mode) as (address, _),
        ):
            watch(address, "warm-up")
            results = [watch(address, f"Write {n}.") for n in range(rounds)]
        firsts = [r[0] for r in results if r[0] is not None]
        print(f"{mode:<15} {spread(firsts) if firsts else '-':>24} "
              f"{spread([r[1] for r in results]):>24} {spread([r[2] for r in results]):>24} "
              f"{statistics.median(r[3] for r in results):.0f}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
