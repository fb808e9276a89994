"""The run store: records found by id, listed newest first in pages, watched from any
index by several watchers, and forgotten by age and size but never while running."""

from __future__ import annotations

import asyncio

import pytest

from mesh.errors import AlreadyExistsError, ErrorInfo, InvalidRequestError, NotFoundError
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.host.run_store import RunStore
from tests.support import all_pages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(store: RunStore[str], run_id: str, *, session: str = "", task: str = "t") -> None:
    store.create(RunRecord(run_id=run_id, agent="a", task=task, session_id=session))


def test_a_run_goes_from_queued_to_its_end_and_keeps_its_outcome() -> None:
    store: RunStore[str] = RunStore()
    make(store, "r1")
    assert store.get("r1").status is RunStatus.QUEUED
    store.start("r1")
    assert store.get("r1").status is RunStatus.RUNNING and store.get("r1").started
    store.append("r1", "e0", size=2, keep="always")
    store.finish("r1", status=RunStatus.FAILED, error=ErrorInfo("tool_error", "boom"))
    record = store.get("r1")
    assert (record.status, record.error, record.event_count) == (
        RunStatus.FAILED, ErrorInfo("tool_error", "boom"), 1)  # fmt: skip
    assert record.ended is not None and record.ended >= record.created
    with pytest.raises(AlreadyExistsError):
        make(store, "r1")
    with pytest.raises(NotFoundError):
        store.get("nope")
    with pytest.raises(ValueError, match="final status"):
        make(store, "r2")
        store.finish("r2", status=RunStatus.RUNNING)


def test_list_is_newest_first_filtered_and_paged_with_a_token() -> None:
    clock = Clock()
    store: RunStore[str] = RunStore(clock=clock)
    for n in range(7):
        clock.now += 1
        make(store, f"r{n}", session="s" if n % 2 else "")
    store.start("r6")
    store.finish("r6", status=RunStatus.SUCCEEDED, answer=1)

    pages = all_pages(lambda token: store.query(page_size=3, page_token=token), 3)
    seen = [r.run_id for r in pages]
    assert seen == [f"r{n}" for n in reversed(range(7))]

    odd, _ = store.query(RunFilter(session_id="s"))
    assert [r.run_id for r in odd] == ["r5", "r3", "r1"]
    done, _ = store.query(RunFilter(statuses=frozenset({RunStatus.SUCCEEDED})))
    assert [r.run_id for r in done] == ["r6"]
    window, _ = store.query(RunFilter(created_after=1003, created_before=1005))
    assert [r.run_id for r in window] == ["r3", "r2"]
    with pytest.raises(InvalidRequestError, match="page_token"):
        store.query(page_token="bm90LWEtdG9rZW4=")
    with pytest.raises(InvalidRequestError, match="page_token"):
        store.query(page_token="x" * 100_000)


def test_events_added_together_reach_a_watcher_at_once_as_one_batch() -> None:
    async def scenario() -> list[tuple[int, str]]:
        store: RunStore[str] = RunStore()
        make(store, "r")
        store.start("r")
        watch = store.watch("r")
        waiting = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.01)
        store.extend("r", [("a", 1, "always"), ("b", 1, "bounded"), ("c", 1, "always")])
        return await asyncio.wait_for(waiting, timeout=5)  # not woken: it would wait forever

    assert asyncio.run(scenario()) == [(0, "a"), (1, "b"), (2, "c")]


async def _collect(store: RunStore[str], run_id: str, start: int = 0
                   ) -> list[list[tuple[int, str]]]:  # fmt: skip
    return [batch async for batch in store.watch(run_id, start)]


def test_watchers_replay_from_any_index_then_follow_until_the_run_ends() -> None:
    async def scenario() -> tuple[list[list[tuple[int, str]]], ...]:
        store: RunStore[str] = RunStore()
        make(store, "r")
        store.start("r")
        store.append("r", "a", size=1, keep="bounded")
        store.append("r", "b", size=1, keep="bounded")
        watchers = [asyncio.create_task(_collect(store, "r", start)) for start in (0, 1, 5)]
        await asyncio.sleep(0.01)
        store.append("r", "c", size=1, keep="always")
        await asyncio.sleep(0.01)
        store.finish("r", status=RunStatus.SUCCEEDED)
        late = await _collect(store, "r", 2)  # after the end: a replay that ends by itself
        return (*[await w for w in watchers], late)

    from_start, from_one, beyond, late = asyncio.run(scenario())
    assert [e for batch in from_start for e in batch] == [(0, "a"), (1, "b"), (2, "c")]
    assert [e for batch in from_one for e in batch] == [(1, "b"), (2, "c")]
    assert beyond == []
    assert late == [[(2, "c")]]


def test_a_runs_bulky_events_stop_being_kept_past_its_share_but_structural_ones_stay() -> None:
    store: RunStore[str] = RunStore(max_bytes=4000)  # a run's share: 1000 bytes
    make(store, "r")
    store.append("r", "start", size=10, keep="always")
    for _ in range(5):
        store.append("r", "bulky", size=400, keep="bounded")
    store.append("r", "end", size=10, keep="always")
    store.finish("r", status=RunStatus.SUCCEEDED)
    record = store.get("r")
    assert record.event_count == 7 and record.events_truncated

    async def replay() -> list[tuple[int, str]]:
        return [e async for batch in store.watch("r") for e in batch]

    kept = asyncio.run(replay())
    assert kept[0] == (0, "start") and kept[-1] == (6, "end")
    assert [i for i, e in kept if e == "bulky"] == [1, 2]


def test_finished_runs_are_forgotten_by_age_and_by_size_but_never_a_running_one() -> None:
    clock = Clock()
    store: RunStore[str] = RunStore(retention_s=60, max_bytes=20_000, clock=clock)
    make(store, "running")
    store.start("running")
    make(store, "old")
    store.finish("old", status=RunStatus.SUCCEEDED)
    clock.now += 61
    make(store, "new")
    assert store.find("old") is None and store.find("running") is not None

    for n in range(40):  # each about 2 KB: the oldest finished go first
        make(store, f"big{n}", task="x" * 1000)
        store.append(f"big{n}", "e", size=1000, keep="always")
        store.finish(f"big{n}", status=RunStatus.SUCCEEDED)
        assert store.bytes_kept <= 20_000
    assert store.find("running") is not None and store.find("big39") is not None
    assert store.find("big0") is None
    clock.now += 3600
    store.query()
    assert [r.run_id for r in store.query()[0]] == ["new", "running"]


def test_watching_an_unknown_or_forgotten_run_is_not_found() -> None:
    async def first() -> object:
        async for batch in RunStore[str]().watch("gone"):
            return batch
        return None

    with pytest.raises(NotFoundError, match="unknown, or forgotten"):
        asyncio.run(first())


def test_events_that_come_while_a_batch_is_being_sent_are_not_missed() -> None:
    async def scenario() -> list[tuple[int, str]]:
        store: RunStore[str] = RunStore()
        make(store, "r")
        store.append("r", "a", size=1, keep="bounded")
        seen: list[tuple[int, str]] = []
        async for batch in store.watch("r"):
            seen += batch
            if len(seen) == 1:  # while "sending" the first batch, two more arrive, and no more
                store.append("r", "b", size=1, keep="bounded")
                store.append("r", "c", size=1, keep="bounded")
            if len(seen) == 3:
                break
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), timeout=5))  # missed: it would wait forever
    assert seen == [(0, "a"), (1, "b"), (2, "c")]
