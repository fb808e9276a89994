"""``Notifications``: PostgreSQL ``LISTEN/NOTIFY``, delivered to callbacks of this process.

How one replica reaches the others: a store that changes shared state sends
``notify(db, channel, payload)`` in the same transaction as the change, so
the notification goes out exactly when the change commits (and never for a
change rolled back). Each process listens on one connection of its own, on a
thread of its own, and hands each notification to the callbacks subscribed
to its channel (which must be quick: they schedule work, they do not do it).

Notifications sent while a listener was disconnected are lost; that is
PostgreSQL's contract. So each subscriber's ``resumed`` callback runs once its
channel is listened to (a subscriber added later misses nothing sent before
that either), and again after every reconnection, to catch up by reading the
state itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mesh.state.database import Database
from mesh.state.setting import redacted

__all__ = ["Notifications", "notify"]

log = logging.getLogger(__name__)

MAX_PAYLOAD_CHARS = 7000
"""PostgreSQL caps a payload at 8000 bytes; payloads are ids, far below it."""
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
POLL_S = 0.5


def notify(db: psycopg.Connection[tuple[Any, ...]], channel: str, payload: str) -> None:
    """Send ``payload`` on ``channel`` when ``db``'s transaction commits."""
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise ValueError(f"a notification payload is at most {MAX_PAYLOAD_CHARS} characters")
    db.execute("SELECT pg_notify(%s, %s)", (channel, payload))


@dataclass(frozen=True)
class _Subscriber:
    on_message: Callable[[str], None]
    resumed: Callable[[], None] | None


class Notifications:
    """The process's listener (see the module docstring); ``close`` stops it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listening = threading.Event()
        self._following = threading.Event()
        """Set while every subscriber's channel is listened to."""
        self._thread = threading.Thread(target=self._listen_forever, name="state-notifications",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def subscribe(self, channel: str, on_message: Callable[[str], None],
                  resumed: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Call ``on_message(payload)`` for each notification on ``channel`` from now on
        (``resumed()`` once it is listened to, within ``POLL_S``, and after each
        reconnection)."""
        with self._lock:
            self._subscribers.setdefault(channel, []).append(_Subscriber(on_message, resumed))
            self._following.clear()

    def wait_listening(self, timeout_s: float) -> bool:
        """Whether the listener is connected (tests, start-up)."""
        return self._listening.wait(timeout_s)

    def wait_following(self, timeout_s: float) -> bool:
        """Whether every subscriber's channel is listened to (a service waits for this
        before it serves, so that no cancel or change sent to it is missed)."""
        return self._following.wait(timeout_s)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)

    # -------------------------------------------------------------- internals

    def _listen_forever(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                self._listen_once()
                failures = 0
            except psycopg.Error as err:
                self._listening.clear()
                self._following.clear()
                if failures == 0:
                    log.warning("state notifications from %s interrupted (%s); reconnecting",
                                redacted(self.database.dsn), str(err).strip()[:200])  # fmt: skip
                self._closed.wait(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
                failures += 1

    def _listen_once(self) -> None:
        arguments: dict[str, Any] = self.database.connect_arguments()
        with psycopg.connect(self.database.dsn, autocommit=True, **arguments) as db:
            followed: set[int] = set()  # on this connection: every subscriber is new
            self._follow_new_subscribers(db, followed)
            self._listening.set()
            while not self._closed.is_set():
                for message in db.notifies(timeout=POLL_S):
                    self._deliver(message.channel, message.payload)
                self._follow_new_subscribers(db, followed)

    def _follow_new_subscribers(self, db: psycopg.Connection[tuple[Any, ...]],
                                followed: set[int]) -> None:  # fmt: skip
        """LISTEN to the channels of subscribers not yet followed, then let them catch up."""
        with self._lock:
            listened = {c for c, subs in self._subscribers.items()
                        if any(id(s) in followed for s in subs)}  # fmt: skip
            new = [(c, s) for c, subs in self._subscribers.items() for s in subs
                   if id(s) not in followed]  # fmt: skip
        for channel in sorted({c for c, _ in new} - listened):
            db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for _, subscriber in new:
            followed.add(id(subscriber))
            if subscriber.resumed is not None:
                _quietly(subscriber.resumed)
        with self._lock:
            everyone = sum(len(subs) for subs in self._subscribers.values())
            if everyone == len(followed):
                self._following.set()

    def _deliver(self, channel: str, payload: str) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(channel, ()))
        for subscriber in subscribers:
            _quietly(subscriber.on_message, payload)


def _quietly(callback: Callable[..., None], *args: str) -> None:
    """A subscriber's failure is its own: logged, and the listener goes on."""
    try:
        callback(*args)
    except Exception:
        log.exception("a state notification's subscriber failed")
