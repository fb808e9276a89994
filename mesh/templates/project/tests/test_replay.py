"""This project's tests: its tool alone (fast), then the whole mesh answering its task.

The mesh test starts each agent in its own process, as ``mesh up`` does, on
free ports (so that it never collides with a mesh you have running), and
asks the manager the config's task. The agents replay their cassettes, so
the test needs no model and no network and always gives the same answer;
the services, the RPCs, the sandbox and the tool still run for real, and the
specialist's answer is computed by ``text_stats`` itself. Run with ``pytest``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from mesh import MeshError, RemoteAgent
from mesh.config import MeshConfig
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config, replays

from services.text_specialist.tools import text_stats

PROJECT = Path(__file__).resolve().parent.parent
NOTE = "Ship the release on Friday. Tell the team first, then update the changelog."
ANSWER = "The note has 13 words in 2 sentences; about 4 seconds to read at 200 words per minute."


def test_text_stats_counts_words_sentences_and_reading_time() -> None:
    assert text_stats(text=NOTE) == {"words": 13, "sentences": 2, "reading_seconds": 4}
    # Contractions and hyphenated words count once; a dash is not a word.
    stats = text_stats(text="Don't stop - it's well-known", words_per_minute=60)
    assert stats == {"words": 4, "sentences": 1, "reading_seconds": 4}


def test_text_stats_refuses_an_absurd_reading_speed() -> None:
    # A tool's errors reach the model as a message it can act on, not as a crash.
    with pytest.raises(MeshError, match="words_per_minute must be from 1 to 2000"):
        text_stats(text=NOTE, words_per_minute=0)


@pytest.fixture
def replaying(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MeshConfig:
    """The project's config on free ports, replaying even where a model key is set (a test
    must neither spend money nor depend on a model's mood), with the services' traces, audit
    logs and run records in ``tmp_path`` rather than your data directory."""
    for name in list(os.environ):
        if name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    for name in ("MESH_MODEL", "MESH_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = load_mesh_config(PROJECT / "mesh.toml")
    live = [name for name, agent in config.agents.items() if not replays(config, agent)]
    assert not live, f"these agents would call a live model (api_base set?): {live}"
    free = {  # port 0: each service binds a free port and reports it
        name: dataclasses.replace(agent, addresses=("127.0.0.1:0",))
        for name, agent in config.agents.items()
    }
    return dataclasses.replace(config, agents=free)


def test_the_mesh_answers_its_task(replaying: MeshConfig, tmp_path: Path) -> None:
    config, logs = replaying, tmp_path / "logs"
    try:
        with MeshProcesses(config, log_dir=logs) as mesh:
            manager = RemoteAgent(config.entry, mesh.addresses[config.entry], timeout_s=60)
            try:
                answer = manager.run(config.task)
            finally:
                manager.close()
    except MeshError:
        for log in sorted(logs.glob("*.log")):  # pytest shows this output when the test fails
            print(f"--- {log.name}\n{log.read_text()}")
        raise
    assert answer == ANSWER
