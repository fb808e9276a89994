# ruff: noqa: E501  (the table in the docstring is wide)
"""Abuse and escape attempts from model-written code: each is contained, and the run goes on.

Every attack runs as step 1 of a CodeAgent run whose step 2 calls
final_answer, with every module allowed (``"*"``) so that the jail, not the
import allow-list, is what stops it. What each attack got back here:

| attack                                   | what the code got back                                   |
|------------------------------------------|----------------------------------------------------------|
| connect to a listener on host loopback   | PermissionError: the seccomp policy refuses socket()     |
| resolve a DNS name                       | socket.gaierror: name resolution fails (no network, no /etc) |
| write outside the tmpfs                  | OSError [Errno 30] Read-only file system                 |
| read a secret file written on the host   | FileNotFoundError (host /tmp is not the jail's /tmp)     |
| read the host's environment              | only HOME, LANG, PATH, PYTHON* of the jail; no API key   |
| fork bomb                                | BlockingIOError [Errno 11] at the process limit          |
| allocate far past the memory limit       | MemoryError, with the limit named                        |
| infinite loop                            | stopped at the wall-clock limit; next step in a fresh jail |
| print 100 MB                             | the first 20,000 characters and a note of what was cut   |
| signal a host process                    | ProcessLookupError (own PID namespace)                   |
| ptrace                                   | EPERM from the seccomp filter                            |
| look at host processes through /proc     | an empty, read-only /proc; FileNotFoundError for /proc/1 |
| forbidden import via __import__, importlib, sys.modules | ImportError naming the module (default allow-list) |
| allow-list bypass via object.__subclasses__ | reaches os.popen, but `id` says uid=65534 in the jail |
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mesh import CodeAgent, SandboxConfig
from mesh.agents.memory import ActionStep
from tests.support import code, scripted

SANDBOX = SandboxConfig(wall_seconds=3)


def attack(snippet: str, *, imports: tuple[str, ...] = ("*",)) -> ActionStep:
    """Run ``snippet`` as step 1; assert the run goes on to a final answer; return step 1."""
    agent = CodeAgent(
        [],
        scripted(code(snippet), code("final_answer('still running')")),
        sandbox=SANDBOX,
        additional_authorized_imports=imports,
    )
    assert agent.run("attack") == "still running"
    assert agent.memory is not None
    return agent.memory.steps[0]


def seen(step: ActionStep) -> str:
    return f"{step.observation or ''}\n{step.error or ''}"


def test_connect_to_a_listener_on_host_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        step = attack(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing arrived
    assert "PermissionError: [Errno 1] Operation not permitted" in seen(step)


def test_resolve_a_dns_name() -> None:
    step = attack("import socket\nsocket.getaddrinfo('example.com', 443)")
    assert "gaierror" in seen(step)


@pytest.mark.parametrize("path", ["/usr/lib/evil.py", "/evil", "/opt/mesh/runner.py"])
def test_write_outside_the_tmpfs(path: str) -> None:
    step = attack(f"open({path!r}, 'w').write('x')")
    assert "Read-only file system" in seen(step)


def test_the_tmpfs_is_writable_and_private() -> None:
    step = attack("open('/tmp/scratch', 'w').write('ok')\nprint(open('/tmp/scratch').read())")
    assert step.observation == "Execution logs:\nok"


def test_read_a_secret_file_on_the_host(tmp_path: Path) -> None:
    secrets = [tmp_path / "secret.txt", Path("/tmp") / f"mesh-secret-{os.getpid()}"]
    for secret in secrets:
        secret.write_text("sk-do-not-leak")
    try:
        step = attack(
            "\n".join(
                f"try:\n    print(open({str(s)!r}).read())\nexcept OSError as e:\n"
                "    print(type(e).__name__)"
                for s in secrets
            )
        )
    finally:
        secrets[1].unlink()
    assert step.observation == "Execution logs:\nFileNotFoundError\nFileNotFoundError"


def test_read_the_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-do-not-leak")
    step = attack("import os\nprint(sorted(os.environ))\nprint(os.environ.get('OPENAI_API_KEY'))")
    assert "sk-test-do-not-leak" not in seen(step)
    assert step.observation == (
        "Execution logs:\n['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', "
        "'PYTHONIOENCODING']\nNone"
    )


def test_fork_bomb() -> None:
    step = attack("import os\nwhile True:\n    os.fork()")
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in seen(step)


def test_allocate_far_past_the_memory_limit() -> None:
    step = attack("hog = bytearray(8 * 1024 ** 3)")
    assert "MemoryError" in seen(step) and "memory limit is 512 MB" in seen(step)


def test_infinite_loop() -> None:
    step = attack("while True:\n    pass")
    assert "longer than the wall-clock limit of 3 s" in seen(step)


def test_print_100_mb() -> None:
    step = attack("print('x' * 100_000_000)")
    assert step.observation is not None and len(step.observation) < 21_000
    assert f"[output cut: {100_000_001 - 20_000} more characters not shown]" in step.observation


def test_signal_a_host_process() -> None:
    step = attack(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)")
    assert "ProcessLookupError" in seen(step)  # and this test process is still alive


def test_ptrace() -> None:
    step = attack(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.ptrace(16, 1, 0, 0), os.strerror(ctypes.get_errno()))"  # PTRACE_ATTACH
    )
    assert step.observation == "Execution logs:\n-1 Operation not permitted"


def test_look_at_host_processes_through_proc() -> None:
    step = attack("import os\nprint(os.listdir('/proc'))\nopen('/proc/1/status')")
    assert "Execution logs:\n[]" in seen(step)
    assert "FileNotFoundError" in seen(step) and "'/proc/1/status'" in seen(step)


@pytest.mark.parametrize(
    ("snippet", "module"),
    [
        ("__import__('os')", "os"),
        ("import importlib\nimportlib.import_module('os')", "importlib"),
        ("import sys\nsys.modules['os'].system('id')", "sys"),
        ("__builtins__['__import__']('subprocess')", "subprocess"),
        ("from os import path", "os"),
    ],
)
def test_forbidden_imports(snippet: str, module: str) -> None:
    step = attack(snippet, imports=())
    assert f"import of {module!r} is not allowed" in seen(step)
    assert "additional_authorized_imports" in seen(step)


def test_the_allow_list_is_not_the_boundary() -> None:
    step = attack(
        "popen = [c for c in ().__class__.__base__.__subclasses__()\n"
        "         if c.__name__ == '_wrap_close'][0].__init__.__globals__['popen']\n"
        "print(popen('id').read().strip())",
        imports=(),
    )
    assert step.observation == "Execution logs:\nuid=65534 gid=65534 groups=65534"
