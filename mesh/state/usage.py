"""Exact byte counts in the shared database: one usage row per owner, locked to write.

Each bounded store (the memo per namespace, the ledger and the sessions per
agent) keeps what its owner's rows take in a row of its own usage table,
changed in the transaction that changes the rows, so that no table is ever
summed. A writer that must read the count to decide (is there room? is it
time to forget?) takes that row's lock first, before any other row: the
owner's writers, on every replica, then queue in one order and cannot
deadlock.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from psycopg import sql

__all__ = ["lock_usage"]


def lock_usage(db: psycopg.Connection[Any], table: LiteralString, owner_column: LiteralString,
               owner: str) -> int:  # fmt: skip
    """Take ``owner``'s turn to write (its usage row, created at its first write) for the
    rest of the transaction; the bytes counted."""
    lock = sql.SQL("SELECT bytes FROM {} WHERE {} = %s FOR UPDATE").format(
        sql.Identifier(table), sql.Identifier(owner_column))  # fmt: skip
    row = db.execute(lock, (owner,)).fetchone()
    if row is None:  # the owner's first write (or two first writes at once)
        create = sql.SQL("INSERT INTO {} ({}, bytes) VALUES (%s, 0) ON CONFLICT DO NOTHING")
        db.execute(create.format(sql.Identifier(table), sql.Identifier(owner_column)), (owner,))
        row = db.execute(lock, (owner,)).fetchone()
    assert row is not None  # created above, and never deleted
    return int(row[0])
