"""``Notifications``: PostgreSQL ``LISTEN/NOTIFY``, delivered to callbacks of this process.

How one replica reaches the others: a store that changes shared state sends
``notify(db, channel, payload)`` in the same transaction as the change, so
the notification goes out exactly when the change commits (and never for a
change rolled back). Each process listens on one connection of its own, on a
thread of its own, and hands each notification to the callbacks subscribed
to its channel (which must be quick: they schedule work, they do not do it).

Notifications sent while a listener was disconnected are lost; that is
PostgreSQL's contract. So after every reconnection each subscriber's
``resumed`` callback runs, to catch up by reading the state itself.
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
        self._thread = threading.Thread(target=self._listen_forever, name="state-notifications",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def subscribe(self, channel: str, on_message: Callable[[str], None],
                  resumed: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Call ``on_message(payload)`` for each notification on ``channel`` from now on
        (``resumed()`` after each reconnection); it takes effect within ``POLL_S``."""
        with self._lock:
            self._subscribers.setdefault(channel, []).append(_Subscriber(on_message, resumed))

    def wait_listening(self, timeout_s: float) -> bool:
        """Whether the listener is connected (tests, start-up)."""
        return self._listening.wait(timeout_s)

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
                if failures == 0:
                    log.warning("state notifications from %s interrupted (%s); reconnecting",
                                redacted(self.database.dsn), str(err).strip()[:200])  # fmt: skip
                self._closed.wait(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
                failures += 1

    def _listen_once(self) -> None:
        arguments: dict[str, Any] = self.database.connect_arguments()
        with psycopg.connect(self.database.dsn, autocommit=True, **arguments) as db:
            channels: set[str] = set()
            self._follow_new_channels(db, channels)
            self._listening.set()
            self._catch_up()
            while not self._closed.is_set():
                for message in db.notifies(timeout=POLL_S):
                    self._deliver(message.channel, message.payload)
                self._follow_new_channels(db, channels)

    def _follow_new_channels(self, db: psycopg.Connection[tuple[Any, ...]],
                             channels: set[str]) -> None:  # fmt: skip
        with self._lock:
            new = [c for c in self._subscribers if c not in channels]
        for channel in new:
            db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            channels.add(channel)

    def _catch_up(self) -> None:
        with self._lock:
            everyone = [s for subs in self._subscribers.values() for s in subs]
        for subscriber in everyone:
            if subscriber.resumed is not None:
                _quietly(subscriber.resumed)

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
