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


OWN_TASK = "Define each word of 'the cat sat' and count its vowels."
OWN_SUBTASK = "For each word of 'the cat sat': its definition and its number of vowels."
OWN_ANSWER = ("the: no definition of 'the' (1 vowels); cat: a small domesticated feline "
              "(1 vowels); sat: past tense of sit (1 vowels)")  # fmt: skip
LOCAL_SERVER = "http://localhost:11434/v1"  # what the README records against


def readme_section(title: str) -> str:
    """A section's own text, up to its first sub-section."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    return text[start : text.index("\n##", start + 1)]


def own_mesh_model() -> Cassette:
    """What the live model answers in "Build your own mesh": the manager delegates, the
    specialist uses the user's tool and the MCP server's."""
    lines = "words = 'the cat sat'.split()\nparts = [f\"{w}: {define(word=w)['result']} " \
            "({count_vowels(text=w)} vowels)\" for w in words]\nprint(parts)"  # fmt: skip
    return Cassette([
        *Cassette.from_responses([
            code(f"answer = text_specialist(task={OWN_SUBTASK!r})\nprint(answer)"),
            code("final_answer(answer)"),
        ], task=OWN_TASK).entries,
        *Cassette.from_responses([code(lines), code('final_answer("; ".join(parts))')],
                                 task=OWN_SUBTASK).entries,
    ])  # fmt: skip


def test_build_your_own_mesh_runs_as_written(tmp_path: Path, installed: Path) -> None:
    """Every command of "Build your own mesh", in order, in one shell, as a user types them,
    with smolmesh installed from a wheel (the local model server is a recording; the agents
    listen on free ports)."""
    commands = re.findall(r"```bash\n(.*?)```", readme_section("Build your own mesh"), re.DOTALL)
    assert len(commands) == 4
    venv_bin = str(installed)
    with ReplayServer(own_mesh_model()) as server:
        script = "\n".join(commands).replace(LOCAL_SERVER, server.api_base) + "\nwait\n"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env["PATH"] = f"{venv_bin}:{env['PATH']}"
        env["MESH_ADDRESS_MANAGER"] = f"127.0.0.1:{free_port()}"
        env["MESH_ADDRESS_TEXT_SPECIALIST"] = f"127.0.0.1:{free_port()}"
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    project = tmp_path / "my-mesh"
    assert (project / "dictionary.py").exists()
    # record, the replayed demo and the served mesh each gave the answer
    assert done.stdout.count(f"final answer: {OWN_ANSWER}") >= 3, done.stdout[-3000:]
    recorded = Cassette.load(project / "services" / "text_specialist" / "cassette.jsonl")
    assert OWN_SUBTASK in recorded.tasks
    assert len(recorded.tasks) == 2  # the template's task is kept beside the new one


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
