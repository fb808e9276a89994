"""README's Python examples run as written, through LiteLLM, against recorded answers.

Blocks fenced ```python are whole programs and run here; blocks fenced ```py
are fragments (they refer to names defined elsewhere) and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mesh import Cassette, ReplayServer
from tests.support import calls, code

README = Path(__file__).parent.parent / "README.md"
POPULATION_TASK = "What is the population of Oslo, and what is its smallest prime factor?"
MANAGER_TASK = "What is the smallest prime factor of 10! + 1?"
SPECIALIST_TASK = "What is the smallest prime factor of 3628801?"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def run_example(source: str, server: ReplayServer) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(OPENAI_BASE_URL=server.api_base, OPENAI_API_KEY="test-key")
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_readme_examples_run() -> None:
    cassette = Cassette(
        [
            *Cassette.from_responses(
                [
                    calls(("get_population", {"city": "Oslo"})),
                    calls(("smallest_prime_factor", {"n": 717710})),
                    calls(
                        (
                            "final_answer",
                            {"answer": "Oslo has 717710 people; smallest prime factor 2."},
                        )
                    ),
                ],
                task=POPULATION_TASK,
            ).entries,
            *Cassette.from_responses(
                [
                    code(
                        "import math\nn = math.factorial(10) + 1\n"
                        'spf = math_specialist(task=f"What is the smallest prime factor of {n}?")\n'
                        "print(spf)"
                    ),
                    code("final_answer(spf)"),
                ],
                task=MANAGER_TASK,
            ).entries,
            *Cassette.from_responses(
                [
                    calls(("smallest_prime_factor", {"n": 3628801})),
                    calls(("final_answer", {"answer": 11})),
                ],
                task=SPECIALIST_TASK,
            ).entries,
        ]
    )
    blocks = python_blocks()
    assert len(blocks) == 2
    with ReplayServer(cassette) as server:
        assert run_example(blocks[0], server) == "Oslo has 717710 people; smallest prime factor 2."
        assert run_example(blocks[1], server) == "11"
        tool_results = [
            m["content"] for r in server.requests for m in r["messages"] if m["role"] == "tool"
        ]
    assert "717710 is composite; its smallest prime factor is 2." in tool_results
    assert "3628801 is composite; its smallest prime factor is 11." in tool_results
