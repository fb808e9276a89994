"""Durable state shared by every replica of every agent: PostgreSQL behind one setting.

Unset (the default), each service keeps its state in embedded SQLite files and
append-only logs of its own (``mesh.host``, ``mesh.tools.memo``): right on one
machine. A ``postgresql://`` DSN (``[mesh] state`` or ``$MESH_STATE_DSN``)
moves the memo, the run ledger, run records and events, sessions and the
tool-change log into that database instead, so that replicas behind one
address share them, and cancellation and watches reach whichever replica
holds a run (``LISTEN/NOTIFY``).

The driver is psycopg 3 with its pool: the stores are called from the
agents' worker threads (tools such as the memo, a run's records) as much as
from the service's event loop, and psycopg serves both with one maintained
driver, LISTEN/NOTIFY included; asyncpg is asyncio only.
"""
