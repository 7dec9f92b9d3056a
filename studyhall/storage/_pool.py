"""Connections to a database server: survive its restart, without a round trip per use.

SQLAlchemy's ``pool_pre_ping`` tests every connection it hands out, so one the server dropped
(a restart) is replaced instead of failing a query. A no-op trial checks a connection out 7-8
times, milliseconds apart, and pays a round trip each time (8 of its ~40 on PostgreSQL). Here a
connection is tested only when it sat in the pool longer than ``IDLE_PING_S``: a server cannot
stop and start again in less than that, so a connection back in use sooner cannot have been
dropped by a restart; one that failed mid-use is invalidated by SQLAlchemy with the rest of the
pool, as before. This is SQLAlchemy's "custom pessimistic ping" (a ``checkout`` event that
raises ``DisconnectionError``, after which the pool connects afresh, up to three times).

PostgreSQL reads that are one statement (or a few, each reading committed data), and writes
that are one statement, run in autocommit mode: psycopg sends ``BEGIN`` and ``COMMIT`` as round
trips of their own, and a read in a transaction of its own sees nothing more (PostgreSQL's
default isolation, read committed, takes a new snapshot per statement anyway). Other servers
keep their transactions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["IDLE_PING_S", "ping_when_idle", "read_connection"]

IDLE_PING_S = 0.25
"""A pooled connection idle longer than this is tested before use."""

_IDLE_SINCE = "studyhall_idle_since"


def ping_when_idle(engine: Any, idle_s: float = IDLE_PING_S) -> None:
    """Test ``engine``'s pooled connections on checkout only after ``idle_s`` in the pool."""
    import sqlalchemy

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops it and connects anew
            raise sqlalchemy.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc

    sqlalchemy.event.listen(engine, "checkin", checkin)
    sqlalchemy.event.listen(engine, "checkout", checkout)


@contextlib.contextmanager
def read_connection(engine: Any) -> Iterator[Any]:
    """A pooled connection for reads and one-statement writes (``_writes.py``; the caller
    commits, a no-op in autocommit): in autocommit mode on PostgreSQL (no ``BEGIN``/``COMMIT``
    round trips; set and reset client-side by psycopg), a plain one elsewhere."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection
