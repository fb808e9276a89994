"""Test helpers: scripted model responses, and watching processes (bounded polls, no sleeps
as synchronisation)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mesh import Cassette, ChatMessage, ModelResponse, ReplayModel, TokenUsage, ToolCall


def code(text: str, thought: str = "Next step.") -> str:
    """A CodeAgent answer: reasoning and one code block."""
    return f"{thought}\n```python\n{text}\n```"


def calls(
    *items: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str], content: str | None = None
) -> ModelResponse:
    """A ToolCallingAgent answer with native tool calls (name, args[, id])."""
    tool_calls = tuple(
        ToolCall(
            item[2] if len(item) > 2 else f"id_{n}_{item[0]}",  # type: ignore[misc]
            item[0],
            json.dumps(item[1]),
        )
        for n, item in enumerate(items)
    )
    return ModelResponse(ChatMessage("assistant", content, tool_calls), TokenUsage(100, 10))


def scripted(*responses: ModelResponse | str, task: str | None = None) -> ReplayModel:
    """A model that answers turn by turn from ``responses``."""
    resolved = [
        r
        if isinstance(r, ModelResponse)
        else ModelResponse(ChatMessage("assistant", r), TokenUsage(100, 10))
        for r in responses
    ]
    return ReplayModel(Cassette.from_responses(resolved, task=task))


T = TypeVar("T")


def all_pages(fetch: Callable[[str], tuple[list[T], str]], page_size: int) -> list[T]:
    """Every item of a paged listing, following its tokens; each page within ``page_size``."""
    items: list[T] = []
    token = ""
    while True:
        page, token = fetch(token)
        assert len(page) <= page_size
        items += page
        if not token:
            return items


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    script: str,
    directory: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int = subprocess.DEVNULL,
    log: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``script`` (Python that serves an agent at the address it is given first, then
    ``args``) in a process of its own, its traces and audit log under ``directory`` (its
    stderr in ``log``, if given): its address and process once it serves, stopped
    gracefully after (so its spans flush)."""
    from mesh.launcher import wait_healthy

    path = directory / "service.py"
    path.write_text(script)
    address = f"127.0.0.1:{free_port()}"
    environment = {**os.environ, "MESH_TRACE_DIR": str(directory / "t"),
                   "MESH_AUDIT_DIR": str(directory / "a"), **(env or {})}  # fmt: skip
    errors = log.open("w") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, str(path), address, *args], cwd=directory,
                               env=environment, stdout=stdout, stderr=errors,
                               text=True)  # fmt: skip
    try:
        wait_healthy(address, 30)
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        if log is not None:
            errors.close()  # type: ignore[union-attr]


def wait_until(condition: Callable[[], T], timeout_s: float = 15.0) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s} s")


def _processes() -> list[tuple[int, int, str]]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat="], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return [(int(pid), int(ppid), stat) for pid, ppid, stat in (r.split()[:3] for r in
            out.splitlines())]  # fmt: skip


def descendants(root: int) -> set[int]:
    """PIDs of every live process below ``root`` (zombies are not counted)."""
    children: dict[int, list[int]] = {}
    for pid, ppid, stat in _processes():
        if not stat.startswith("Z"):
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def children(parent: int) -> set[int]:
    """PIDs of the live processes whose parent is ``parent``."""
    return {pid for pid, ppid, stat in _processes() if ppid == parent and not stat.startswith("Z")}


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (not zombies)."""
    return pids & {pid for pid, _, stat in _processes() if not stat.startswith("Z")}


def busy_jails(root: int) -> set[int]:
    """Jailed runners below ``root`` that have burnt over a second of CPU (spinning code)."""
    ps = ["ps", "-e", "-ww", "-o", "pid=,ppid=,cputimes=,args="]  # -ww: pytest sets COLUMNS
    out = subprocess.run(ps, capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    children: dict[int, list[tuple[int, int, str]]] = {}
    for pid, ppid, cpu, args in (r + [""] * (4 - len(r)) for r in rows):
        children.setdefault(int(ppid), []).append((int(pid), int(cpu), args))
    busy, todo = set(), [root]
    while todo:
        for pid, cpu, args in children.get(todo.pop(), []):
            todo.append(pid)
            if "/opt/mesh" in args and cpu >= 1:  # the jail's runner
                busy.add(pid)
    return busy
