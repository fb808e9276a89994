"""Runs forked by one zygote: each sees nothing of another, and none can take the zygote down.

Two interpreters of one sandbox configuration run at the same time, as two
concurrent agent runs would, every module allowed, and one attacks the
other: its files, processes, signals, shared memory, sockets. Then the
zygote itself is attacked: a fork bomb and a memory hog in one run while
another works, and the zygote killed in the middle of a run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from mesh import NsjailExecutor, SandboxConfig
from mesh.sandbox.base import ExecutionResult
from tests.support import alive, children, descendants
from tests.test_sandbox import Bridge

CONFIG = SandboxConfig(wall_seconds=5, memory_mb=400)


@pytest.fixture
def two_runs() -> Iterator[tuple[NsjailExecutor, NsjailExecutor]]:
    victim = NsjailExecutor(CONFIG, authorized_imports=["*"])
    attacker = NsjailExecutor(CONFIG, authorized_imports=["*"])
    assert victim.zygote is attacker.zygote
    yield victim, attacker
    victim.close()
    attacker.close()


def run(executor: NsjailExecutor, code: str) -> ExecutionResult:
    result = executor.run(code, Bridge())
    assert result.note is None, result  # the run's interpreter never died
    return result


def test_a_concurrent_run_files_are_out_of_reach(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    victim, attacker = two_runs
    run(victim, "open('/tmp/secret', 'w').write('victim data')")
    seen = run(attacker, "import os\nprint(os.listdir('/tmp'), os.path.exists('/tmp/secret'))")
    assert seen.output == "[] False\n"
    assert run(victim, "print(open('/tmp/secret').read())").output == "victim data\n"


def test_a_concurrent_run_processes_cannot_be_seen_or_signalled(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    victim, attacker = two_runs
    run(victim, "import subprocess\nchild = subprocess.Popen(['sleep', '60'])")
    probe = run(
        attacker,
        "import os, signal\n"
        "found = []\n"
        "for pid in range(1, 4096):\n"
        "    try:\n"
        "        os.kill(pid, 0)\n"
        "        found.append(pid)\n"
        "    except (ProcessLookupError, PermissionError):\n"
        "        pass\n"
        "print(found, os.getpid())\n"
        "os.kill(-1, signal.SIGKILL)",  # every process this run may signal
    )
    assert probe.output == "[1] 1\n"  # only itself
    assert run(victim, "print(child.poll())").output == "None\n"  # its child still runs


def test_a_concurrent_run_shared_memory_is_its_own(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    victim, attacker = two_runs
    shm = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    made = run(victim, shm + "print(libc.shmget(0x5EC, 4096, 0o1666))")  # IPC_CREAT | 0666
    assert made.output.strip().isdigit()
    found = run(attacker, shm + "print(libc.shmget(0x5EC, 4096, 0o666), ctypes.get_errno())")
    assert found.output == "-1 2\n"  # ENOENT: another IPC namespace
    posix = run(attacker, "import os\nprint(os.path.exists('/dev/shm'))")
    assert posix.output == "False\n"


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket(socket.AF_INET).bind(('127.0.0.1', 9))",
        "import socket\nsocket.socket(socket.AF_UNIX).bind('\\0mesh-run')",  # abstract socket
        "import socket\nsocket.socket(socket.AF_UNIX).connect('\\0mesh-run')",
    ],
)
def test_no_run_can_open_a_socket(
    two_runs: tuple[NsjailExecutor, NsjailExecutor], code: str
) -> None:
    """Runs share one empty network namespace: the policy refuses socket() to all of them."""
    _, attacker = two_runs
    result = run(attacker, code)
    assert result.error is not None and "PermissionError: [Errno 1]" in result.error


@pytest.mark.parametrize(
    "code",
    [
        "print(libc.unshare(0x10000000))",  # CLONE_NEWUSER
        "print(libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))",  # clone(CLONE_NEWUSER | SIGCHLD)
        "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))",
        "print(libc.sethostname(b'x', 1))",  # needs a capability: the run has none
    ],
)
def test_a_run_cannot_make_namespaces_mount_or_use_capabilities(code: str) -> None:
    ex = NsjailExecutor(CONFIG, authorized_imports=["*"])
    try:
        result = run(ex, "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n" + code
                     + "\nprint(os.strerror(ctypes.get_errno()))")  # fmt: skip
    finally:
        ex.close()
    assert result.output == "-1\nOperation not permitted\n"


def test_each_run_draws_its_own_random_numbers(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    draw = "import random\nprint(random.random())"
    assert run(two_runs[0], draw).output != run(two_runs[1], draw).output


def test_a_fork_bomb_in_one_run_starves_neither_the_zygote_nor_another_run(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    bomber, neighbour = two_runs
    run(bomber, "import os\nkids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                "            import time\n            time.sleep(60)\n        kids += 1\n"
                "except BlockingIOError:\n    print('limit after', kids)")  # fmt: skip
    spawned = run(neighbour, "import subprocess\nprint(subprocess.run(['true']).returncode)")
    assert spawned.output == "0\n"
    fresh = NsjailExecutor(CONFIG)
    try:
        assert run(fresh, "print('a new run starts')").output == "a new run starts\n"
    finally:
        fresh.close()


def test_a_memory_hog_in_one_run_leaves_the_others_working(
    two_runs: tuple[NsjailExecutor, NsjailExecutor],
) -> None:
    hog, neighbour = two_runs
    grow = "blocks = []\ntry:\n    while True:\n        blocks.append(bytearray(2**24))\n"
    result = run(hog, grow + "except MemoryError:\n    print('stopped at', len(blocks) * 16, 'MB')")
    assert result.output.startswith("stopped at")
    assert run(neighbour, "print(sum(range(10)))").output == "45\n"


def test_killing_the_zygote_mid_run_fails_the_run_and_a_new_zygote_takes_over() -> None:
    ex = NsjailExecutor(SandboxConfig(wall_seconds=30), authorized_imports=["*"])
    old = ex.zygote
    run(ex, "import subprocess\nchild = subprocess.Popen(['sleep', '60'])")
    processes = descendants(old.pid) | {old.pid}
    outcome: list[ExecutionResult] = []
    step = threading.Thread(target=lambda: outcome.append(ex.run("while True: pass", Bridge())))
    step.start()
    time.sleep(0.2)
    (outer,) = children(old.pid)
    (zygote_proper,) = children(outer)  # the process that forks runs
    os.kill(zygote_proper, signal.SIGKILL)
    step.join(timeout=10)
    assert outcome and outcome[0].error is not None
    assert "The sandboxed interpreter died: the sandbox's zygote is gone" in outcome[0].error
    deadline = time.monotonic() + 5
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(processes)  # nothing orphaned: nsjail, both zygote processes, the run's
    after = run_after_loss(ex)
    assert after.output == "fresh\n" and ex.zygote is not old and not ex.zygote.dead
    ex.close()


def run_after_loss(ex: NsjailExecutor) -> ExecutionResult:
    result = ex.run("print('fresh')", Bridge())
    assert result.note is not None and "earlier steps are gone" in result.note
    return result


def test_a_zygote_kept_busy_holds_no_more_than_its_runs() -> None:
    """Every run start orders the next spare, which the zygote forks only once idle; a spare
    displaced before it was forked must be dropped, not kept, or a busy zygote runs out of
    descriptors and dies with every run it carries."""
    config = SandboxConfig(wall_seconds=5, max_open_files=32)
    zygote = NsjailExecutor(config).zygote

    def churn() -> None:
        for _ in range(150):
            zygote.spawn().kill()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not zygote.dead
    (outer,) = children(zygote.pid)
    (proper,) = children(outer)
    assert len(os.listdir(f"/proc/{proper}/fd")) < 32
    fresh = NsjailExecutor(config)
    try:
        assert run(fresh, "print('served')").output == "served\n"
    finally:
        fresh.close()


def test_what_code_may_do_still_works_under_the_run_filter() -> None:
    """The run's filter refuses clone3 (ENOSYS, so the C library falls back to clone) and
    namespace flags only: threads, processes and an asyncio loop (a socketpair) still work."""
    ex = NsjailExecutor(CONFIG, authorized_imports=["*"])
    try:
        result = run(
            ex,
            "import asyncio, subprocess, threading\n"
            "seen = []\n"
            "thread = threading.Thread(target=seen.append, args=('thread',))\n"
            "thread.start(); thread.join()\n"
            "seen.append(subprocess.run(['echo', 'process'], capture_output=True, text=True)"
            ".stdout.strip())\n"
            "async def main():\n    await asyncio.sleep(0)\n    return 'asyncio'\n"
            "seen.append(asyncio.run(main()))\n"
            "print(seen)",
        )
    finally:
        ex.close()
    assert result.output == "['thread', 'process', 'asyncio']\n"
