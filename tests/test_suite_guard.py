"""The suite's leftover check judges only what this suite started: another mesh running on
the same machine (another checkout, another user's tests) is not a leftover of ours."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import _mesh_processes
from tests.support import wait_until


def fake_service(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process whose command line reads like a mesh service's."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mesh", "serve",
                             "agent"], env=env)  # fmt: skip


def test_the_leftover_check_sees_only_this_suites_processes() -> None:
    stranger_env = {k: v for k, v in os.environ.items() if k != "MESH_TEST_SUITE"}
    ours, stranger = fake_service(dict(os.environ)), fake_service(stranger_env)
    try:
        seen = wait_until(lambda: {pid for pid, _ in _mesh_processes()} & {ours.pid} and
                          {pid for pid, _ in _mesh_processes()})  # fmt: skip
        assert ours.pid in seen and stranger.pid not in seen
    finally:
        for process in (ours, stranger):
            process.kill()
            process.wait()
