"""The nsjail executor: warm state, the tool bridge, limits, recovery, start-up checks."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mesh import CodeAgent, NsjailExecutor, SandboxConfig, factorial
from mesh.agents import ModelOutput
from mesh.errors import ToolExecutionError
from mesh.sandbox.jail import death_reason, signal_name
from mesh.sandbox.nsjail import SandboxUnavailableError, locate_nsjail, nsjail_errors
from mesh.sandbox.protocol import FrameReader, encode
from mesh.sandbox.zygotes import Zygote
from tests.support import alive, code, descendants, scripted, wait_until

FAST = SandboxConfig(wall_seconds=3)


class Bridge:
    """A host side that records calls: ``double`` works, ``broken`` fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], dict[str, Any]]] = []

    def tool_names(self) -> Sequence[str]:
        return ["double", "broken", "final_answer"]

    def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        self.calls.append((name, list(args), dict(kwargs)))
        if name == "broken":
            raise ToolExecutionError("broken failed: it always does")
        if name == "double":
            return args[0] * 2
        return (list(args) or [kwargs.get("answer")])[0]


@pytest.fixture
def executor() -> Iterator[NsjailExecutor]:
    ex = NsjailExecutor(FAST, authorized_imports=["math"])
    yield ex
    ex.close()


def test_state_persists_across_snippets(executor: NsjailExecutor) -> None:
    bridge = Bridge()
    first = executor.run("import math\ndef area(r):\n    return math.pi * r * r\nx = 2", bridge)
    assert first.error is None and first.note is None
    second = executor.run("print(round(area(x), 3))\nx + 1", bridge)
    assert second.output == "12.566\n" and second.value == "3"


def test_tool_calls_travel_to_the_host(executor: NsjailExecutor) -> None:
    bridge = Bridge()
    result = executor.run(
        "print(double(21))\ntry:\n    broken()\nexcept Exception as err:\n"
        "    print(type(err).__name__, err)\nfinal_answer({'n': double(x=4) if False else 8})",
        bridge,
    )
    assert result.output == "42\nToolExecutionError broken failed: it always does\n"
    assert result.is_final and result.final_answer == {"n": 8}
    assert bridge.calls == [
        ("double", [21], {}),
        ("broken", [], {}),
        ("final_answer", [{"n": 8}], {}),
    ]


def test_values_json_cannot_carry_are_made_readable(executor: NsjailExecutor) -> None:
    result = executor.run("final_answer({3, 1, 2})", Bridge())
    assert result.final_answer == [1, 2, 3]
    result = executor.run(
        "class P:\n    def __repr__(self):\n        return 'P()'\nfinal_answer(P())", Bridge()
    )
    assert result.final_answer == "P()"


def test_wall_clock_limit_then_a_fresh_jail_with_a_note(executor: NsjailExecutor) -> None:
    executor.run("kept = 1", Bridge())
    started = time.monotonic()
    stuck = executor.run("while True:\n    pass", Bridge())
    assert time.monotonic() - started < 10
    assert stuck.error == (
        "The code ran longer than the wall-clock limit of 3 s per step and was stopped."
    )
    after = executor.run("print('alive')\nkept", Bridge())
    assert after.output == "alive\n"
    assert (
        after.note is not None
        and "variables, functions and imports from earlier steps are gone" in after.note
    )
    assert after.error is not None and "NameError: name 'kept' is not defined" in after.error


def test_time_in_host_tools_does_not_count() -> None:
    class SlowBridge(Bridge):
        def call_tool(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
            time.sleep(1.5)
            return 1

    ex = NsjailExecutor(SandboxConfig(wall_seconds=1))
    try:
        result = ex.run("double(1)\ndouble(2)\nprint('done')", SlowBridge())
    finally:
        ex.close()
    assert result.error is None and result.output == "done\n"


def test_cpu_time_limit_is_named() -> None:
    ex = NsjailExecutor(SandboxConfig(cpu_seconds=1, wall_seconds=20))
    try:
        result = ex.run("while True:\n    pass", Bridge())
        assert result.error is not None
        assert "used up its CPU time limit of 1 s" in result.error
        assert ex.run("print('again')", Bridge()).output == "again\n"
    finally:
        ex.close()


def test_memory_limit_is_named(executor: NsjailExecutor) -> None:
    result = executor.run("block = bytearray(2 * 1024 ** 3)", Bridge())
    assert result.error is not None and "MemoryError" in result.error
    assert "memory limit is 512 MB" in result.error
    assert executor.run("print('still warm')", Bridge()).note is None


def test_output_is_capped() -> None:
    ex = NsjailExecutor(SandboxConfig(max_output_chars=1000))
    try:
        result = ex.run("for i in range(10000):\n    print('line', i)", Bridge())
    finally:
        ex.close()
    assert result.output.startswith("line 0\nline 1\n")
    assert len(result.output) < 1100
    assert "[output cut: " in result.output and "more characters not shown]" in result.output


def test_a_crashing_interpreter_is_reported() -> None:
    ex = NsjailExecutor(FAST, authorized_imports=["*"])
    try:
        crashed = ex.run("import ctypes\nctypes.string_at(0)", Bridge())
        assert crashed.error == (
            "The sandboxed interpreter died: the interpreter crashed with signal SIGSEGV."
        )
        exited = ex.run("import os\nos._exit(3)", Bridge())
        assert exited.note is not None
        assert exited.error == "The sandboxed interpreter died: the interpreter exited with code 3."
    finally:
        ex.close()


def test_close_kills_the_jail_and_every_process_in_it() -> None:
    ex = NsjailExecutor(FAST, authorized_imports=["*"])
    ex.run(
        "import subprocess\nchildren = [subprocess.Popen(['sleep', '60']) for _ in range(3)]",
        Bridge(),
    )
    below = descendants(ex.zygote.pid)
    sleepers = {pid for pid in below if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"}
    runner = {
        int(Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[1]) for pid in sleepers
    }
    assert len(sleepers) == 3 and len(runner) == 1
    ex.close()  # the zygote kills the run: wait (bounded) for its processes to go
    deadline = time.monotonic() + 5
    while alive(sleepers | runner) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(sleepers | runner)
    assert alive(below - sleepers - runner) == below - sleepers - runner  # the zygote lives on


def test_a_run_never_gets_a_used_jail() -> None:
    config = SandboxConfig(wall_seconds=3)
    first, second = NsjailExecutor(config), NsjailExecutor(config)
    try:
        first.run("secret = 'from run one'", Bridge())
        result = second.run("print(globals().get('secret'))", Bridge())
        assert result.output == "None\n"
    finally:
        first.close()
        second.close()


def test_code_agent_runs_in_the_jail_and_cancellation_kills_it() -> None:
    agent = CodeAgent(
        [factorial],
        scripted(code("print(factorial(5))"), code("while True:\n    pass"), code("x")),
        sandbox=FAST,
    )
    stream = agent.run("t", stream=True)
    started = None
    for event in stream:
        if isinstance(event, ModelOutput) and event.step == 2:
            started = time.monotonic()
            break
    stream.close()  # type: ignore[attr-defined]
    assert started is not None and time.monotonic() - started < 2  # not the 3 s wall limit
    assert agent.memory is not None
    assert agent.memory.steps[0].observation == "Execution logs:\n120"


def test_start_up_checks_say_what_is_missing(tmp_path: Any) -> None:
    with pytest.raises(SandboxUnavailableError, match="is not an executable"):
        locate_nsjail(SandboxConfig(nsjail=str(tmp_path / "nsjail")))
    with pytest.raises(SandboxUnavailableError, match="does not exist; set MESH_JAIL_PYTHON"):
        CodeAgent([], scripted("x"), sandbox=SandboxConfig(python="/nonexistent/python3"))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python3").symlink_to("/usr/bin/python3.11")
    (private / "python3").unlink()
    (private / "python3").write_bytes(b"")
    with pytest.raises(SandboxUnavailableError, match=r"cannot enter.*chmod o\+x"):
        CodeAgent([], scripted("x"), sandbox=SandboxConfig(python=str(private / "python3")))
    with pytest.raises(SandboxUnavailableError, match=r"(?s)could not start.*user namespaces"):
        Zygote(SandboxConfig(nsjail="/bin/false"))


NSJAIL_PROC_FAILURE = """\
[W][2026-12-02T15:32:55+0000][7] logParams():313 Process will be UID/EUID=0 in the global \
user namespace, and will have user root-level access to files
[I][2026-12-02T15:32:55+0000] Mount: '/proc' type:'proc' options:'' dir:true
[W][2026-12-02T15:32:55+0000][9] mountSinglePoint():225 mount('none' -> \
'/run/user/nsjail.0.root//proc'): procfs mount may fail if /proc has overmounts (e.g., \
/dev/null on /proc/kcore): Operation not permitted
[E][2026-12-02T15:32:55+0000][9] buildMountTree():328 Failed to mount mandatory point: '/proc'
[E][2026-12-02T15:32:55+0000][9] initCloneNs():270 Failed to build mount tree
[F][2026-12-02T15:32:55+0000][9] runChild():506 Launching child process failed
[W][2026-12-02T15:32:55+0000][7] runChild():526 Received error message from the child process \
before it has been executed
[E][2026-12-02T15:32:55+0000][7] standaloneMode():274 Couldn't launch the child process
"""
"""What nsjail logs in a container that may not mount /proc (as printed, one line each)."""


def test_nsjails_failure_is_its_error_lines_without_their_prefixes() -> None:
    assert nsjail_errors(NSJAIL_PROC_FAILURE) == (
        "buildMountTree():328 Failed to mount mandatory point: '/proc' | "
        "initCloneNs():270 Failed to build mount tree | "
        "runChild():506 Launching child process failed | "
        "standaloneMode():274 Couldn't launch the child process"
    )


def test_without_errors_the_zygotes_own_words_then_warnings_then_anything() -> None:
    root = NSJAIL_PROC_FAILURE.splitlines()[0]
    walls = "the run's walls could not be raised: [Errno 1] Operation not permitted"
    assert nsjail_errors(f"{root}\n{walls}\n") == walls
    assert nsjail_errors(f"[I][2026-12-02T15:32:55+0000] Mode: STANDALONE_ONCE\n{root}\n") == (
        "logParams():313 Process will be UID/EUID=0 in the global user namespace, and will "
        "have user root-level access to files"
    )
    assert nsjail_errors("[I][2026-12-02T15:32:55+0000] Mode: STANDALONE_ONCE\n") == (
        "Mode: STANDALONE_ONCE"
    )
    assert nsjail_errors("") == ""


def test_nsjails_errors_are_cut_between_lines_keeping_the_first_and_the_last() -> None:
    errors = [f"[E][2026-12-02T15:32:55+0000][1] step{n}():1 {'x' * 90}" for n in range(12)]
    said = nsjail_errors("\n".join(errors))
    assert len(said) <= 600
    parts = said.split(" | ")
    assert parts[0] == f"step0():1 {'x' * 90}" and parts[-1] == f"step11():1 {'x' * 90}"
    assert parts[-2] == "..." and all(len(part) == 100 for part in parts[:-2])
    alone = nsjail_errors(f"[F][2026-12-02T15:32:55+0000][1] huge():1 {'y' * 900}")
    assert len(alone) == 600 and alone.startswith("huge():1 yyy") and alone.endswith("...")


def test_only_a_real_signal_number_is_a_signal() -> None:
    assert death_reason(255, 0.0, 10) == "the interpreter exited with code 255"
    assert death_reason(139, 0.0, 10) == "the interpreter crashed with signal SIGSEGV"
    assert death_reason(137, 0.0, 10) == "it was killed (SIGKILL)"
    assert death_reason(3, 0.0, 10) == "the interpreter exited with code 3"
    assert signal_name(-15) == "SIGTERM"  # as subprocess reports it
    assert signal_name(128 + 40) == "40"  # a real-time signal, which has no name
    assert signal_name(200) is None and signal_name(None) is None


def test_a_jail_that_cannot_start_says_nsjails_own_error() -> None:
    """An interpreter nsjail cannot bind into the jail: nsjail fails as it does in a
    container without the right to mount, and says why in its own [E] lines."""
    with pytest.raises(SandboxUnavailableError) as failed:
        Zygote(SandboxConfig(python="/nonexistent/bin/python3"))
    message = str(failed.value)
    assert re.search(
        r"could not start: nsjail exited with code 255: buildMountTree\(\):\d+ Failed to "
        r"mount mandatory point: '/nonexistent' \| ",
        message,
    ), message
    assert "logParams" not in message and "[E][" not in message


def test_a_jail_dies_with_its_host_even_while_code_spins() -> None:
    """nsjail does not die with its parent, and spinning code never reads EOF:
    the runner's watchdog must end the jail when the host process is SIGKILLed."""
    host = subprocess.Popen(
        [sys.executable, "-c", (
            "import threading, time\n"
            "from mesh.sandbox.config import SandboxConfig\n"
            "from mesh.sandbox.nsjail_executor import NsjailExecutor\n"
            "from tests.test_sandbox import Bridge\n"
            "ex = NsjailExecutor(SandboxConfig(wall_seconds=100))\n"
            "threading.Thread(target=ex.run, args=('while True:\\n    pass', Bridge()),"
            " daemon=True).start()\n"
            "print(ex.zygote.pid, flush=True)\n"
            "time.sleep(100)\n"
        )],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert host.stdout is not None
    host.stdout.readline()
    jails = wait_until(lambda: descendants(host.pid))
    host.kill()
    host.wait()
    deadline = time.monotonic() + 5
    while alive(jails) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(jails)


def test_frames_are_read_from_descriptors_past_select_limit() -> None:
    # A loaded service holds more than 1024 descriptors; select() cannot watch those.
    read_end, write_end = os.pipe()
    high = fcntl.fcntl(read_end, fcntl.F_DUPFD, 1500)
    try:
        reader = FrameReader(high)
        with pytest.raises(TimeoutError):
            reader.read(timeout=0.01)
        os.write(write_end, encode({"op": "ready"}))
        assert reader.read(timeout=5) == {"op": "ready"}
    finally:
        for fd in (read_end, write_end, high):
            os.close(fd)


def test_cancelling_at_any_moment_of_a_step_is_a_clean_cancellation() -> None:
    """close() from another thread races the step's send and receive; the step must end as
    cancelled, never with an error from a pipe closed (or its descriptor reused) under it."""
    outcomes: dict[str, int] = {}
    for attempt in range(60):
        ex = NsjailExecutor(SandboxConfig(wall_seconds=10))
        ex.run("ready = True", Bridge())
        ended: list[BaseException | object] = []

        def step(ex: NsjailExecutor = ex, ended: list[BaseException | object] = ended) -> None:
            try:
                ended.append(ex.run("while True:\n    pass", Bridge()))
            except BaseException as err:
                ended.append(err)

        thread = threading.Thread(target=step)
        thread.start()
        time.sleep(attempt % 10 / 1000)  # close at 0..9 ms into the step
        ex.close()
        thread.join(timeout=10)
        outcome = type(ended[0]).__name__ if ended else "still running"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == {"RunCancelledError": 60}
