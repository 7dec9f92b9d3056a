"""Pooled server connections: one the server dropped is replaced, without a ping per use."""

from __future__ import annotations

import time

import pytest
import sqlalchemy

from studyhall.storage import open_storage
from studyhall.storage._pool import IDLE_PING_S, ping_when_idle, read_connection

PID = sqlalchemy.text("SELECT pg_backend_pid()")


def _pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(PID).scalar()


def _terminate(url: str, pid: int) -> None:
    """What a server restart does to a pooled connection, done to this one only."""
    killer = sqlalchemy.create_engine(url)
    with killer.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT pg_terminate_backend(:p)"),
                                  {"p": pid}).scalar()
    killer.dispose()


def test_a_storage_replaces_a_dropped_connection_that_sat_idle(postgres_url):
    engine = open_storage(postgres_url).engine
    pid = _pid(engine)
    _terminate(postgres_url, pid)
    time.sleep(IDLE_PING_S + 0.2)
    assert _pid(engine) != pid  # tested on checkout, replaced, and the query ran
    engine.dispose()


@pytest.mark.parametrize("idle_s", [0.0, 3600.0])
def test_only_a_connection_idle_past_the_limit_is_tested(postgres_url, idle_s):
    engine = sqlalchemy.create_engine(postgres_url, pool_pre_ping=False)
    ping_when_idle(engine, idle_s)
    pid = _pid(engine)
    _terminate(postgres_url, pid)
    time.sleep(0.05)
    if idle_s:  # not tested: the dropped connection fails its query...
        with pytest.raises(sqlalchemy.exc.OperationalError):
            _pid(engine)
    assert _pid(engine) != pid  # ...and SQLAlchemy replaces it for the next one
    engine.dispose()


def test_reads_on_postgresql_skip_begin_and_commit(postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    with read_connection(engine) as connection:
        connection.execute(sqlalchemy.text("SELECT 1"))
        assert connection.connection.dbapi_connection.autocommit
    with engine.connect() as connection:  # handed back as it was
        assert not connection.connection.dbapi_connection.autocommit
    engine.dispose()
