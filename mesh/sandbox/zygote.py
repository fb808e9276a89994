"""The zygote: one pre-jailed, pre-imported interpreter that forks each run's.

Started by nsjail (the outer jail every run shares) with a control socket
from the host, whose descriptor its settings name. It preloads what runs
import, enters namespaces of its own and forks the zygote proper (see
isolation.ZygoteWalls). For each "spawn" the host sends the run's two pipe
ends with the message; the zygote forks the run's interpreter as PID 1 of a
new PID namespace, and the child raises its walls and becomes the runner.
The zygote reaps it, so it learns how the run ended and how much CPU it
used; it kills it on the host's word or at the end of its lifetime, and
every process the run started dies with its PID namespace.

The zygote stays single-threaded (forking a threaded process is unsafe) and
never runs model code. Stdlib only: it is copied into the jail.

Host -> zygote (one datagram each; SCM_RIGHTS carries the pipes):
    {"op": "spawn", "id": int, "spare": int}
        fork run "id" now, with [its stdin read end, its stdout write end]; and order
        a spare, with the next two, to be forked once the zygote is idle
    {"op": "claim", "id": int, "spare": int}
        spare "id" is taken (its lifetime starts); order the next, with two ends
    {"op": "kill", "id": int}
Zygote -> host:
    {"op": "ready"}
    {"op": "exited", "id": int, "code": int, "cpu": float, "lifetime": bool}
      code: the runner's exit code, or 128 + the signal that ended it; lifetime: the
      zygote ended it at the end of its lifetime
    {"op": "exited", "id": int, "refused": true}   it could not be forked (see the log)
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import select
import signal
import site
import socket
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mesh.sandbox import isolation, runner
else:  # in the jail these files sit beside this one, with no mesh package around them
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import isolation
    import runner

MAX_MESSAGE = 4096
SPARE_AFTER_MS = 3  # a spare is forked once the zygote is this idle: it yields to runs
JAIL_ID = 65534


class Settings:
    """What every run of this zygote gets, from the zygote's command line (one JSON)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.control_fd = int(raw["control_fd"])
        self.tmpfs_bytes = int(raw["tmpfs_bytes"])
        self.lifetime_s = float(raw["lifetime_s"])
        self.limits = {
            resource.RLIMIT_CPU: int(raw["cpu_s"]),
            resource.RLIMIT_NPROC: int(raw["processes"]),
            resource.RLIMIT_NOFILE: int(raw["open_files"]),
        }
        self.preload = [str(name) for name in raw.get("preload", ())]


class Run:
    __slots__ = ("deadline", "pid", "run_id", "timed_out")

    def __init__(self, run_id: int, pid: int, deadline: float) -> None:
        self.run_id, self.pid, self.deadline, self.timed_out = run_id, pid, deadline, False


class Zygote:
    def __init__(self, settings: Settings, walls: isolation.ZygoteWalls) -> None:
        self.settings = settings
        self.walls = walls
        walls.in_zygote()
        self.control = socket.socket(fileno=settings.control_fd)
        self.runs: dict[int, Run] = {}  # by pid
        self.by_id: dict[int, Run] = {}
        self.spares: list[tuple[int, int, int]] = []  # (run id, stdin, stdout) not forked yet
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake = wake_read
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wake, select.POLLIN)
        self.send({"op": "ready"})
        while True:
            events = poller.poll(self.timeout_ms())
            for fd, _ in events:
                if fd == self.wake:
                    while len(os.read(self.wake, 512)) == 512:
                        pass
                else:
                    self.handle()
            self.reap()
            self.end_lifetimes()
            if not events and self.spares:  # idle for SPARE_AFTER_MS: now make the spare
                self.fork_spare(0, claimed=False)

    def handle(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 4)
        except InterruptedError:
            return
        if not data:
            os._exit(0)  # the host went away: so do the zygote and every run (PID 1 of the jail)
        message = json.loads(data)
        op, run_id = message.get("op"), message.get("id")
        try:
            if op == "spawn" and len(fds) == 4:
                self.fork(int(run_id), fds[0], fds[1], self.lifetime_end())
            elif op == "claim":
                self.claim(int(run_id))
            elif op == "kill":
                self.kill(int(run_id))
            if "spare" in message and len(fds) >= 2:
                self.order_spare(int(message["spare"]), fds[-2], fds[-1])
        finally:
            for fd in fds:
                os.close(fd)

    def order_spare(self, run_id: int, stdin: int, stdout: int) -> None:
        try:
            self.spares.append((run_id, os.dup(stdin), os.dup(stdout)))
        except OSError as err:
            self.refuse(run_id, err)

    def claim(self, run_id: int) -> None:
        """A spare is taken: its lifetime starts; one not forked yet is forked now."""
        if run_id in self.by_id:
            self.by_id[run_id].deadline = self.lifetime_end()
        for index, (spare_id, _, _) in enumerate(self.spares):
            if spare_id == run_id:
                self.fork_spare(index, claimed=True)
                return

    def kill(self, run_id: int) -> None:
        """End a run; a spare not forked yet is dropped."""
        if run_id in self.by_id:
            os.kill(self.by_id[run_id].pid, signal.SIGKILL)
        for index, (spare_id, stdin, stdout) in enumerate(self.spares):
            if spare_id == run_id:
                del self.spares[index]
                os.close(stdin)
                os.close(stdout)
                self.refuse(run_id, None)
                return

    def fork_spare(self, index: int, claimed: bool) -> None:
        """Fork the spare ordered ``index``-th; its lifetime starts when the host claims it."""
        run_id, stdin, stdout = self.spares.pop(index)
        try:
            self.fork(run_id, stdin, stdout, self.lifetime_end() if claimed else math.inf)
        finally:
            os.close(stdin)
            os.close(stdout)

    def refuse(self, run_id: int, err: OSError | None) -> None:
        """Tell the host a run it asked for will not be (its pipes are closed here)."""
        if err is not None:
            os.write(2, f"a run could not be forked: {err}\n".encode())
        self.send({"op": "exited", "id": run_id, "refused": True})

    def lifetime_end(self) -> float:
        return time.monotonic() + self.settings.lifetime_s

    def fork(self, run_id: int, stdin: int, stdout: int, deadline: float) -> None:
        """Fork a run's interpreter (the caller keeps and closes the pipe ends it gave).
        Out of processes or memory, the run is refused and the zygote lives on."""
        try:
            self.walls.before_fork()
            try:
                pid = os.fork()
                if pid == 0:
                    become_runner(self, stdin, stdout)
            finally:
                self.walls.after_fork()
        except OSError as err:
            self.refuse(run_id, err)
            return
        self.runs[pid] = self.by_id[run_id] = Run(run_id, pid, deadline)

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is not None:
                del self.by_id[run.run_id]
                code = os.waitstatus_to_exitcode(status)
                self.send({
                    "op": "exited", "id": run.run_id, "code": 128 - code if code < 0 else code,
                    "cpu": usage.ru_utime + usage.ru_stime, "lifetime": run.timed_out,
                })  # fmt: skip

    def timeout_ms(self) -> int:
        """Until the next run's lifetime ends, or, with a spare to make, until idle enough."""
        soonest = min((run.deadline for run in self.runs.values()), default=math.inf)
        wait = -1 if soonest == math.inf else max(0, int((soonest - time.monotonic()) * 1000) + 1)
        if self.spares:
            wait = SPARE_AFTER_MS if wait < 0 else min(wait, SPARE_AFTER_MS)
        return wait

    def end_lifetimes(self) -> None:
        now = time.monotonic()
        for run in self.runs.values():
            if run.deadline <= now and not run.timed_out:
                run.timed_out = True
                os.kill(run.pid, signal.SIGKILL)

    def send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())


def become_runner(zygote: Zygote, stdin: int, stdout: int) -> None:
    try:
        zygote.control.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        zygote.walls.raise_run_walls()
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.closerange(3, 1 << 16)
        runner.main()
    except BaseException as err:  # said on nsjail's log, while it is still open
        os.write(2, f"the run's walls could not be raised: {err}\n".encode())
    finally:
        os._exit(126)


def preload(names: list[str]) -> None:
    """Import what every run would import anyway, once, before any fork; then keep the
    collector off the shared objects, so runs do not copy their pages just to scan them."""
    site.main()  # the interpreter runs with -S: site-packages, for code allowed "*" imports
    for name in names:
        try:
            __import__(name)
        except Exception:  # left to the run, whose own import then says why
            continue
    gc.freeze()


def main() -> None:
    """Preload, then hand over to the zygote proper and live exactly as long as it does."""
    settings = Settings(json.loads(sys.argv[1]))
    preload(settings.preload)
    walls = isolation.ZygoteWalls(JAIL_ID, JAIL_ID, settings.tmpfs_bytes, settings.limits)
    pid = os.fork()
    if pid == 0:
        Zygote(settings, walls).serve()
    os.close(settings.control_fd)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
