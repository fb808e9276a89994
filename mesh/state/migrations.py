"""Versioned schema migrations, run at start-up by every replica, safely at once.

The schema is a numbered series of SQL files in ``mesh/state/schema``
(``0001_memo.sql``, ...), each applied once, in order, and recorded in
``mesh_migrations``. Replicas that start together serialise on a
transaction-scoped advisory lock: the first applies what is missing, the
others then find it applied. DDL is transactional in PostgreSQL, so a
replica killed mid-migration leaves nothing half done. A database whose
schema is newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from mesh.errors import ConfigError

__all__ = ["Migration", "migrate", "migrations"]

LOCK_KEY = 0x736D6F6C6D657368  # "smolmesh": one advisory lock for every schema change
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema's steps, in order."""
    found = []
    for entry in resources.files("mesh.state").joinpath("schema").iterdir():
        if match := _FILE.match(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    assert len(set(versions)) == len(versions), f"two schema files share a number: {versions}"
    return found


def migrate(db: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    """Apply what the database lacks, in the caller's transaction; the names applied."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    db.execute(
        "CREATE TABLE IF NOT EXISTS mesh_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
    )
    rows = db.execute("SELECT version FROM mesh_migrations").fetchall()
    done = {int(str(version)) for (version,) in rows}
    known = migrations()
    if unknown := done - {m.version for m in known}:
        raise ConfigError(f"the state database has schema version {max(unknown)}, which this "
                          "smolmesh does not know: upgrade smolmesh")  # fmt: skip
    applied = []
    for step in known:
        if step.version not in done:
            db.execute(step.sql.encode())  # our own files, not a caller's text
            db.execute("INSERT INTO mesh_migrations (version, name) VALUES (%s, %s)",
                       (step.version, step.name))  # fmt: skip
            applied.append(f"{step.version:04d}_{step.name}")
    return applied
