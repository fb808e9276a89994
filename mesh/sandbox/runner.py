"""The interpreter loop inside the jail: stdlib only, forked by the zygote.

It keeps one namespace for the whole agent run, executes each snippet it is
sent, and turns every tool call of the code into a message to the host,
waiting for the host's reply. The real stdin/stdout are kept for the
protocol; the code's own print() and stderr go to a capped buffer, and file
descriptors 0-2 point at /dev/null so stray writes cannot corrupt the stream.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mesh.sandbox import protocol, snippet
else:  # in the jail these files sit beside this one, with no mesh package around them
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol
    import snippet

RUNNER_PID = 0  # set by main(): processes the code forks must not answer the host


class Channel:
    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        self.reader = protocol.FrameReader(os.dup(0))
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.register_at_fork(after_in_child=self.detach)

    def detach(self) -> None:
        """In a forked child: drop the protocol so only the runner itself talks to the host."""
        self.out.close()
        os.close(self.reader.fd)

    def send(self, message: dict[str, Any]) -> None:
        protocol.write_frame(self.out, message)

    def receive(self) -> dict[str, Any]:
        message = self.reader.read()
        if message is None:
            os._exit(0)  # the host went away: nothing left to do
        return message


_error_types: dict[str, type[Exception]] = {}


def tool_error(name: str, message: str) -> Exception:
    """An exception named like the host's error class, so code can print and catch it."""
    if name not in _error_types:
        _error_types[name] = type(name, (Exception,), {"__module__": "tools"})
    return _error_types[name](message)


def call_host(channel: Channel) -> Any:
    """Send a tool call to the host and wait for its reply."""

    def call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        channel.send({"op": "call", "name": name, "args": list(args), "kwargs": kwargs})
        reply = channel.receive()
        if not reply.get("ok"):
            raise tool_error(reply.get("error_type", "ToolError"), reply.get("message", ""))
        return reply.get("value")

    return call


def run(channel: Channel, namespace: dict[str, Any], request: dict[str, Any]) -> None:
    namespace["__builtins__"]["__import__"] = snippet.import_guard(request.get("imports", ()))
    snippet.install_tools(namespace, request.get("tools", ()), call_host(channel))
    output = snippet.CappedOutput(int(request.get("max_output", 20_000)))
    sys.stdout = sys.stderr = output
    try:
        outcome = snippet.execute_snippet(request["code"], namespace)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if os.getpid() != RUNNER_PID:  # a process the code forked finished the snippet too
        os._exit(0)
    channel.send(
        {
            "op": "done",
            "output": output.text(),
            "value": outcome.value,
            "error": outcome.error,
            "final": outcome.is_final,
            "answer": outcome.final_answer,
        }
    )


class Rehearsal(Channel):
    """A channel to nobody, for ``warm_up``: what would be sent is encoded and dropped,
    and every tool call is answered with None."""

    def __init__(self) -> None:  # no descriptors of its own
        pass

    def send(self, message: dict[str, Any]) -> None:
        protocol.encode(message)

    def receive(self) -> dict[str, Any]:
        return {"op": "reply", "ok": True, "value": None}


WARM_UP = {"code": "x = [1, 2]\nprint(len(x))\nanswer(x)\nx", "tools": ["answer"]}


def warm_up() -> None:
    """Take a snippet's whole path once (``run``), in a namespace thrown away, before
    saying "ready".

    A forked interpreter copies each page of the zygote's that it first writes to. A
    spare (forked while the host is idle) pays for the pages every snippet writes now,
    so that its run's first snippet costs what a later one does.
    """
    run(Rehearsal(), {"__name__": "__main__", "__builtins__": dict(vars(builtins))}, WARM_UP)


def main() -> None:
    """Serve the host over fds 0 and 1 (in a zygote's child, once its walls are up)."""
    global RUNNER_PID
    RUNNER_PID = os.getpid()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
    channel = Channel()
    warm_up()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": dict(vars(builtins))}
    channel.send({"op": "ready"})
    while True:
        request = channel.receive()
        if request.get("op") == "exec":
            run(channel, namespace, request)
