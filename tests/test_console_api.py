"""The web console's server (``mesh ui``) against a real mesh: its JSON API, its event streams,
its guards.

One mesh (the test mesh of ``mesh_setup``: manager, research, math and a slow
specialist, each its own process) and one console served in this process serve
the module; a second console with a token, and ``mesh ui`` / ``mesh up --ui`` as
a user runs them, check what only they can. The page itself is the browser
tests' business: here it is a stand-in directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mesh.cli import main
from mesh.console import ConsoleServer
from mesh.console.event_feed import EventFeed
from mesh.errors import ConfigError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from tests.mesh_setup import SEED_TASK, SLOW_TASK, cassette_lines
from tests.support import busy_jails, code, wait_until

TOKEN = "console-token-" + "x" * 20
JAEGER = "http://jaeger.example:16686"
AGENTS = ["research_specialist", "math_specialist", "slow_specialist", "manager"]
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's services write their traces and audit logs."""
    return tmp_path_factory.mktemp("console-records")


@pytest.fixture(scope="module")
def mesh(mesh_dir: Path, records: Path) -> Iterator[MeshProcesses]:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_MEMO_PATH": str(records / "memo.sqlite3"), "MESH_TRACE_DIR": str(records / "t"),
           "MESH_AUDIT_DIR": str(records / "a")}  # fmt: skip
    with MeshProcesses(config, log_dir=records / "logs", env=env) as processes:
        yield processes


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the console's page directory (the real one is the browser tests')."""
    directory = tmp_path_factory.mktemp("static")
    (directory / "index.html").write_text("<!doctype html><script src=/static/console.js>")
    (directory / "console.js").write_text("console.log('hi')")
    (directory / "console.css").write_text("body {}")
    (directory / "notes.py").write_text("secret = 1")  # not a type the page serves
    (directory.parent / "outside.js").write_text("no")
    return directory


@pytest.fixture(scope="module")
def console(
    mesh: MeshProcesses, mesh_dir: Path, records: Path, page: Path
) -> Iterator[ConsoleServer]:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=JAEGER,
                       addresses=mesh.addresses, static_dir=page, audit_dir=records / "a",
                       trace_dir=records / "t", keepalive_s=0.3) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def http(console: ConsoleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def csrf(http: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": http.get("/api/session").json()["csrf"]}


@pytest.fixture(scope="module")
def seed_run(http: httpx.Client, csrf: dict[str, str]) -> dict[str, Any]:
    """The seed task started from the console and watched to its end."""
    started = http.post("/api/runs", json={"agent": "manager", "task": SEED_TASK}, headers=csrf)
    assert started.status_code == 201, started.text
    assert started.json()["agent"] == "manager"
    run_id = started.json()["run_id"]
    events, end = watch(http, "manager", run_id)
    return {"run_id": run_id, "events": events, "end": end}


# Reading Server-Sent Events ---------------------------------------------------------------


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """A stream's messages: {"event", "id", "data"} (data parsed), or {"comment": text}."""
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if "data" in message:
                yield {"event": message.get("event", "message"), "id": message.get("id"),
                       "data": json.loads(message["data"])}  # fmt: skip
            message = {}
        else:
            field, _, value = line.partition(":")
            message[field] = value.removeprefix(" ")


def watch(
    http: httpx.Client, agent: str, run_id: str, headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """A run's events and the RunJSON its stream ends with."""
    url = f"/api/runs/{agent}/{run_id}/events{query}"
    events: list[dict[str, Any]] = []
    with http.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in messages(response):
            if message.get("event") == "end":
                return events, message["data"]
            if "data" in message:
                assert int(message["id"]) == message["data"]["index"]
                events.append(message["data"])
    raise AssertionError(f"the stream ended without its end message after {len(events)} events")


def error_of(response: httpx.Response, status: int) -> str:
    """The message of an error answer, which must be JSON with that status, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return str(body["error"])


# The tests --------------------------------------------------------------------------------


def test_session_page_and_security_headers(http: httpx.Client) -> None:
    session = http.get("/api/session")
    assert session.headers["content-type"] == "application/json"
    body = session.json()
    assert len(body["csrf"]) >= 32 and body["jaeger_url"] == JAEGER
    assert (body["entry"], body["task"], body["agents"]) == ("manager", SEED_TASK, AGENTS)
    for response in (session, http.get("/"), http.get("/api/nothing")):
        assert {k: response.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
    assert session.headers["cache-control"] == "no-store"
    # Answers on a kept-alive connection are not held back (Nagle, the client's delayed ACK:
    # 40 ms each), nor are a stream's events.
    times = sorted(http.get("/api/session").elapsed.total_seconds() for _ in range(9))
    assert times[4] < 0.03, times
    index = http.get("/")
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert "console.js" in index.text
    assert http.get("/static/console.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/static/console.css").headers["content-type"].startswith("text/css")
    for path in ("/static/notes.py", "/static/..%2Foutside.js", "/static/.hidden.js",
                 "/static/missing.js", "/static/../outside.js"):  # fmt: skip
        error_of(http.get(path), 404)


def test_agents_show_cards_health_and_runs_in_flight(http: httpx.Client) -> None:
    agents = {a["name"]: a for a in http.get("/api/agents").json()["agents"]}
    assert list(agents) == AGENTS
    assert all(a["healthy"] and a["error"] is None and a["replicas"] == 1 for a in agents.values())
    manager, research = agents["manager"], agents["research_specialist"]
    assert (manager["kind"], research["kind"]) == ("code", "tool-calling")
    assert manager["model"] == "replay:manager.jsonl" and manager["version"]
    assert manager["managed_agents"] == ["research_specialist", "math_specialist",
                                         "slow_specialist"]  # fmt: skip
    memo = next(t for t in research["tools"] if t["name"] == "memo")
    assert memo["inputs"]["action"]["enum"] == ["set", "get", "list", "delete"]
    assert memo["output_type"] and memo["description"]
    assert all(isinstance(a["in_flight"], int) for a in agents.values())
    assert agents["math_specialist"]["addresses"][0].startswith("127.0.0.1:")


def test_a_task_started_from_the_console_streams_its_whole_tree(
    seed_run: dict[str, Any], mesh: MeshProcesses
) -> None:
    events, end, run_id = seed_run["events"], seed_run["end"], seed_run["run_id"]
    assert [e["index"] for e in events] == sorted({e["index"] for e in events})
    starts = [e for e in events if e["type"] == "run_started"]
    assert [(e["agent"], e["depth"]) for e in starts] == [
        ("manager", 0), ("research_specialist", 1), ("math_specialist", 1)]  # fmt: skip
    assert starts[0]["run_id"] == run_id and starts[0]["task"] == SEED_TASK
    assert all(e["parent_run_id"] == run_id for e in starts[1:])
    assert re.fullmatch(r"[0-9a-f]{32}", starts[0]["trace_id"])
    kinds = {e["type"] for e in events}
    assert {"model_output", "code_action", "tool_call_started", "tool_call_finished",
            "observation", "final_answer", "run_finished"} <= kinds  # fmt: skip
    call = next(e for e in events if e["type"] == "tool_call_started")
    assert isinstance(call["arguments"], dict) and call["call_id"]
    final = [e for e in events if e["type"] == "final_answer" and e["depth"] == 0]
    assert final[0]["answer"] == end["answer"]
    assert end["answer"].startswith("gRPC was open-sourced in 2015")
    # The end is the run as GetRun has it.
    with AgentClient(mesh.addresses["manager"], agent="manager") as client:
        record = client.get_run(run_id)
    assert (end["status"], end["steps"]) == ("succeeded", record.steps)
    assert end["usage"] == {"input_tokens": record.usage.input_tokens,
                            "output_tokens": record.usage.output_tokens}  # fmt: skip
    assert set(end["usage_by_agent"]) == {"manager", "research_specialist", "math_specialist"}
    assert end["ended"] >= end["started"] >= end["created"] > 0
    last = next(e for e in events if e["type"] == "run_finished" and e["depth"] == 0)
    assert last["usage_by_agent"] == end["usage_by_agent"]


def test_a_stream_resumes_after_the_last_event_id(
    http: httpx.Client, seed_run: dict[str, Any]
) -> None:
    events, run_id = seed_run["events"], seed_run["run_id"]
    cut = events[len(events) // 2]["index"]
    tail = [e for e in events if e["index"] > cut]
    resumed, end = watch(http, "manager", run_id, headers={"Last-Event-ID": str(cut)},
                         query="?from=0")  # fmt: skip
    assert resumed == tail and end == seed_run["end"]
    from_query, _ = watch(http, "manager", run_id, query=f"?from={cut + 1}")
    assert from_query == tail
    assert http.get(f"/api/runs/manager/{run_id}").json() == seed_run["end"]


def test_runs_are_listed_across_agents_with_filters(
    http: httpx.Client, seed_run: dict[str, Any]
) -> None:
    run_id = seed_run["run_id"]
    listed = http.get("/api/runs").json()
    assert listed["errors"] == {}
    runs = listed["runs"]
    created = [r["created"] for r in runs]
    assert created == sorted(created, reverse=True)
    children = {r["agent"] for r in runs if r["parent_run_id"] == run_id}
    assert children == {"research_specialist", "math_specialist"}
    mine = http.get("/api/runs", params={"agent": "manager", "state": "succeeded"}).json()["runs"]
    assert run_id in {r["run_id"] for r in mine}
    assert {r["agent"] for r in mine} == {"manager"} and {r["status"] for r in mine} == {
        "succeeded"}  # fmt: skip
    assert http.get("/api/runs", params={"state": "failed"}).json()["runs"] == []
    later = http.get("/api/runs", params={"since": seed_run["end"]["created"] + 0.001})
    assert run_id not in {r["run_id"] for r in later.json()["runs"]}
    assert len(http.get("/api/runs", params={"limit": 1}).json()["runs"]) == 1


def test_a_runs_audit_and_trace_are_one_request_away(
    http: httpx.Client, seed_run: dict[str, Any]
) -> None:
    run_id = seed_run["run_id"]
    audit = http.get(f"/api/audit/{run_id}").json()
    assert audit["truncated"] is False
    agents = {r["agent"] for r in audit["records"] if r["event"] == "RunStarted"}
    assert agents == {"manager", "research_specialist", "math_specialist"}
    assert http.get("/api/audit/no-such-run").json()["records"] == []
    trace_id = seed_run["events"][0]["trace_id"]

    def spans() -> list[dict[str, Any]]:
        response = http.get(f"/api/traces/{trace_id}")
        found = response.json()["spans"] if response.status_code == 200 else []
        services = {s["service"] for s in found}
        return found if {"manager", "research_specialist", "math_specialist"} <= services else []

    found = wait_until(spans)
    assert all(s["trace_id"] == trace_id for s in found)
    assert [s["start_ns"] for s in found] == sorted(s["start_ns"] for s in found)
    assert any(s["name"].startswith("invoke_agent") for s in found)
    assert all(s["duration_ms"] >= 0 and isinstance(s["attributes"], dict) for s in found)
    error_of(http.get(f"/api/traces/{'0' * 32}"), 404)


def test_cancelling_a_slow_run_cascades(
    http: httpx.Client, csrf: dict[str, str], mesh: MeshProcesses, console: ConsoleServer
) -> None:
    started = http.post("/api/runs", json={"agent": "manager", "task": SLOW_TASK}, headers=csrf)
    run_id = started.json()["run_id"]
    slow_pid = next(s.process.pid for s in mesh.services if s.agent == "slow_specialist")
    child, kept_alive, end = None, False, None
    with http.stream("GET", f"/api/runs/manager/{run_id}/events") as response:
        for message in messages(response):
            data = message.get("data", {})
            if data.get("type") == "run_started" and data.get("depth") == 1:
                child = data["run_id"]
                assert data["agent"] == "slow_specialist" and data["parent_run_id"] == run_id
                wait_until(lambda: busy_jails(slow_pid))
                agents = {a["name"]: a for a in http.get("/api/agents").json()["agents"]}
                assert agents["manager"]["in_flight"] >= 1
                assert agents["slow_specialist"]["in_flight"] == 1
            if message.get("comment") == "keep-alive" and child and not kept_alive:
                kept_alive = True  # the stream stays open while the run is quiet: cancel now
                cancel = http.post(f"/api/runs/manager/{run_id}/cancel", headers=csrf)
                assert cancel.json() == {"cancelled": True, "state": "running"}
            if message.get("event") == "end":
                end = data
                break
    assert end is not None and end["status"] == "cancelled" and end["error"]["reason"]
    assert child is not None
    wait_until(lambda: console.open_streams == 0)
    wait_until(lambda: http.get(f"/api/runs/slow_specialist/{child}").json()["status"]
               == "cancelled")  # fmt: skip
    wait_until(lambda: not busy_jails(slow_pid))
    again = http.post(f"/api/runs/manager/{run_id}/cancel", headers=csrf).json()
    assert again == {"cancelled": False, "state": "cancelled"}
    cancelled = http.get("/api/runs", params={"agent": "slow_specialist", "state": "cancelled"})
    assert child in {r["run_id"] for r in cancelled.json()["runs"]}


def test_streams_end_with_their_page_and_with_the_console(
    http: httpx.Client, csrf: dict[str, str], mesh: MeshProcesses, mesh_dir: Path,
    console: ConsoleServer,
) -> None:  # fmt: skip
    run_id = http.post("/api/runs", json={"agent": "manager", "task": SLOW_TASK},
                       headers=csrf).json()["run_id"]  # fmt: skip
    events = f"/api/runs/manager/{run_id}/events"
    try:
        with http.stream("GET", events) as response:
            next(m for m in messages(response) if "data" in m)
            assert console.open_streams == 1
        wait_until(lambda: console.open_streams == 0)  # the page left: its watch ended
        config = load_mesh_config(mesh_dir / "mesh.toml")
        other = ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=None,
                              addresses=mesh.addresses).start()  # fmt: skip
        with httpx.Client(base_url=other.url, timeout=10) as client, \
                client.stream("GET", events) as response:  # fmt: skip
            lines = response.iter_lines()
            assert next(lines).startswith("id: ")
            stopping = time.monotonic()
            other.stop()  # the stream ends (cleanly, without the run's end), and the console
            rest = list(lines)
            assert time.monotonic() - stopping < 3
        assert "event: end" not in rest
    finally:
        http.post(f"{events.removesuffix('/events')}/cancel", headers=csrf)
    wait_until(lambda: http.get(f"/api/runs/manager/{run_id}").json()["status"] == "cancelled")


def test_state_changes_need_the_csrf_token_and_this_origin(
    http: httpx.Client, csrf: dict[str, str], console: ConsoleServer
) -> None:
    bad_body = {"agent": "manager", "task": ""}  # passes the guard, then fails validation: 400
    origin = console.url.rstrip("/")
    for headers in ({}, {"X-CSRF-Token": "wrong"},
                    {**csrf, "Origin": "http://evil.example"},
                    {**csrf, "Origin": "null"},
                    {**csrf, "Sec-Fetch-Site": "cross-site"}):  # fmt: skip
        message = error_of(http.post("/api/runs", json=bad_body, headers=headers), 403)
        assert "X-CSRF-Token" in message or "refused" in message
        error_of(http.post("/api/runs/manager/x/cancel", headers=headers), 403)
    same_origin = {**csrf, "Origin": origin, "Sec-Fetch-Site": "same-origin"}
    error_of(http.post("/api/runs", json=bad_body, headers=same_origin), 400)
    error_of(http.request("DELETE", "/api/runs", headers=csrf), 405)


def test_only_loopback_names_reach_a_loopback_console(http: httpx.Client) -> None:
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) is refused."""
    assert "answers to 127.0.0.1" in error_of(
        http.get("/api/session", headers={"Host": "evil.example:8090"}), 403)  # fmt: skip
    assert http.get("/api/session", headers={"Host": "localhost:1234"}).status_code == 200


def test_bad_input_is_refused_clearly(
    http: httpx.Client, csrf: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for query, words in [("state=bogus", "state must be one of"), ("limit=0", "limit"),
                         ("limit=500", "limit"), ("since=soon", "since"),
                         ("since=nan", "since")]:  # fmt: skip
        assert words in error_of(http.get(f"/api/runs?{query}"), 400)
    assert "no agent 'nobody'" in error_of(http.get("/api/runs?agent=nobody"), 404)
    error_of(http.get("/api/runs/nobody/some-run"), 404)
    assert "no run" in error_of(http.get("/api/runs/manager/no-such-run"), 404)
    error_of(http.get("/api/runs/manager/no-such-run/events"), 404)
    assert "run_id must be" in error_of(http.get("/api/runs/manager/bad%20id"), 400)
    assert "run_id must be" in error_of(http.get(f"/api/audit/{'x' * 200}"), 400)
    error_of(http.get("/api/runs/manager/x/events", headers={"Last-Event-ID": "soon"}), 400)
    error_of(http.get("/api/runs/manager/x/events?from=-1"), 400)
    assert "32 hex digits" in error_of(http.get("/api/traces/not-a-trace"), 400)

    def post(body: bytes) -> httpx.Response:
        return http.post("/api/runs", content=body, headers=csrf)

    assert "not JSON" in error_of(post(b"{task"), 400)
    assert "JSON object" in error_of(post(b"[1]"), 400)
    assert "task must be" in error_of(post(b'{"agent": "manager"}'), 400)
    assert "unknown fields" in error_of(post(b'{"agent": "manager", "task": "x", "x": 1}'), 400)
    bad_session = {"agent": "manager", "task": "x", "session_id": "a b"}
    assert "session_id must be" in error_of(post(json.dumps(bad_session).encode()), 400)
    assert "no agent" in error_of(post(b'{"agent": "nobody", "task": "x"}'), 404)
    assert "over" in error_of(post(b" " * 500_000), 400)
    error_of(http.get("/api/nothing"), 404)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_token_guards_every_request(mesh: MeshProcesses, mesh_dir: Path, page: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with (
        ConsoleServer(config, "127.0.0.1:0", token=TOKEN, jaeger_url=None,
                      addresses=mesh.addresses, static_dir=page) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):  # fmt: skip
        assert "needs its token" in error_of(client.get("/api/session"), 401)
        error_of(client.get("/"), 401)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        error_of(client.get("/api/session", headers={"Authorization": "Bearer nope" * 3}), 401)
        assert client.get("/api/session", headers=bearer).json()["jaeger_url"] is None
        error_of(client.get("/login", params={"token": "wrong"}), 401)
        login = client.get("/login", params={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie  # the cookie holds a value derived from the token
        assert client.get("/api/session").status_code == 200  # the cookie, now
        assert client.get("/").status_code == 200


def test_a_console_beyond_loopback_needs_a_token(mesh_dir: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with pytest.raises(ConfigError, match=r"refusing to serve the console on 0\.0\.0\.0:0 without"):
        ConsoleServer(config, "0.0.0.0:0", token=None, jaeger_url=None)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ConsoleServer(config, "127.0.0.1:0", token="short", jaeger_url=None)
    with pytest.raises(ConfigError, match="Jaeger URL"):
        ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url="javascript:alert(1)")
    with ConsoleServer(config, "0.0.0.0:0", token=TOKEN, jaeger_url=None) as server:
        url = f"http://127.0.0.1:{server.port}"
        headers = {"Authorization": f"Bearer {TOKEN}", "Host": "console.lan"}
        assert httpx.get(f"{url}/api/session", headers=headers).status_code == 200
        error_of(httpx.get(f"{url}/api/session", headers={"Host": "console.lan"}), 401)
        # The config's addresses (port 0) reach no agent: each says so, nothing is a 5xx.
        agents = httpx.get(f"{url}/api/agents", headers=headers, timeout=10).json()["agents"]
        assert [(a["healthy"], bool(a["error"])) for a in agents] == [(False, True)] * 4
        assert agents[-1]["kind"] == "code" and agents[-1]["description"] == "Delegates."
        runs = httpx.get(f"{url}/api/runs", headers=headers, timeout=10).json()
        assert runs["runs"] == [] and set(runs["errors"]) == set(AGENTS)
        error_of(httpx.get(f"{url}/api/runs?agent=manager", headers=headers, timeout=10), 502)


def test_a_client_that_reads_too_slowly_is_dropped() -> None:
    """The buffer between a run's stream and a page is bounded: a reader that stops is let go
    (its EventSource reconnects and resumes), rather than the console's memory growing."""
    cancelled = threading.Event()

    def endless() -> Iterator[str]:
        index = 0
        while not cancelled.is_set():
            yield f"id: {index}\ndata: {'x' * 100}\n\n"
            index += 1

    async def read_one_then_stall() -> tuple[EventFeed, int]:
        feed = EventFeed(endless(), cancelled.set, max_bytes=10_000, slow_client_s=0.2)
        chunks = feed.chunks()
        await chunks.__anext__()
        while not cancelled.is_set():  # the reader stalls; the source is soon cancelled
            await asyncio.sleep(0.02)
        rest = [chunk async for chunk in chunks]
        return feed, sum(len(c) for c in rest)

    feed, buffered = asyncio.run(asyncio.wait_for(read_one_then_stall(), 10))
    assert feed.dropped and buffered <= 10_000 + 200


def _mesh_command(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``mesh ARGS`` as a user runs it (with no console token, whatever this shell has)."""
    env = {**os.environ, **env, "MESH_CONSOLE_TOKEN": ""}
    return subprocess.Popen([sys.executable, "-m", "mesh", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip


def _console_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Console: "):
            return line.split()[1]
    raise AssertionError(f"no console URL; stderr: {process.communicate()[1]}")


def test_mesh_ui_serves_the_console_of_a_running_mesh(
    mesh: MeshProcesses, mesh_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    env = {f"MESH_ADDRESS_{name.upper()}": ",".join(addresses)
           for name, addresses in mesh.addresses.items()}  # fmt: skip
    monkeypatch.delenv("MESH_CONSOLE_TOKEN", raising=False)
    assert main(["ui", "--address", "0.0.0.0:0", "--config", str(mesh_dir / "mesh.toml")]) == 1
    assert "refusing to serve the console on 0.0.0.0:0 without a token" in capsys.readouterr().err
    process = _mesh_command("ui", "--address", "127.0.0.1:0", "--config",
                            str(mesh_dir / "mesh.toml"), env=env)  # fmt: skip
    try:
        url = _console_url(process)
        agents = httpx.get(f"{url}api/agents", timeout=10).json()["agents"]
        assert [a["healthy"] for a in agents] == [True] * 4
        error_of(httpx.get(f"{url}api/runs?limit=x", timeout=10), 400)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_mesh_up_ui_serves_the_console_beside_the_mesh(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[mesh]\nentry = "echo"\nreplay = "always"\n[agents.echo]\nkind = "code"\n'
        'description = "Echoes."\naddress = "127.0.0.1:0"\ncassette = "echo.jsonl"\n'
    )
    (tmp_path / "echo.jsonl").write_text(cassette_lines("Echo.", code('final_answer("echo")')))
    process = _mesh_command("up", "--ui", "127.0.0.1:0", "--config", str(tmp_path / "mesh.toml"),
                            env={"MESH_TRACE_DIR": str(tmp_path / "t"),
                                 "MESH_AUDIT_DIR": str(tmp_path / "a")})  # fmt: skip
    try:
        url = _console_url(process)
        (agent,) = httpx.get(f"{url}api/agents", timeout=10).json()["agents"]
        assert (agent["name"], agent["healthy"]) == ("echo", True)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    with pytest.raises(httpx.ConnectError):  # stopped with the mesh
        httpx.get(f"{url}api/session", timeout=2)
