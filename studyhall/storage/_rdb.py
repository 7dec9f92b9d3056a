"""Optuna RDB storage, tuned per backend.

SQLite: WAL journal (readers never block the writer) + synchronous=NORMAL (durable against a
killed process; only a power cut can drop the last commits) + a long busy timeout, so several
local workers and the dashboard share one file without "database is locked". Measured here:
Optuna's default SQLite settings ran 29-32 no-op trials/s, WAL + NORMAL 58/s.

Servers: a pooled connection idle for more than 0.25 s is tested before use (``_pool.py``;
not every use, as ``pool_pre_ping`` would), so a restarted database is reconnected.
PostgreSQL connections probe an idle peer after 30 s (libpq's TCP keepalives; the system default
waits two hours), so a server that vanished without closing the connection (a dropped network
link, a host gone) fails a waiting query after about a minute instead of blocking the heartbeat
thread, and with it the trial, for ever.

Heartbeats (see ``heartbeat.py``) use Optuna's own table and the database server's clock; a
heartbeat that cannot be written (the server is restarting) is logged and tried again at the
next interval instead of ending the heartbeat thread, so one outage does not make a live trial
look dead. A RUNNING trial with no heartbeat row at all is judged as well (``NeverBeaten``): a
restart in the instant between creating a trial and its first heartbeat left one RUNNING for
ever, and the other workers waiting for it with it (measured: 1 run in 4 of a test that restarts
PostgreSQL just as new trials start).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import warnings
from typing import Any

from studyhall.errors import StorageError
from studyhall.storage._pool import ping_when_idle
from studyhall.storage.heartbeat import Heartbeat, NeverBeaten, optuna_beats, retry_callback
from studyhall.storage.urls import StorageURL

__all__ = ["open_rdb_storage"]

_logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                 "keepalives_count": 3}
"""libpq's TCP keepalive settings: a silent peer is given up after 30 + 3 x 10 s."""


def _engine_kwargs(url: StorageURL) -> dict[str, Any]:
    if url.backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if url.backend == "postgresql":
        connect_args.update(PG_KEEPALIVES)
    return {"pool_pre_ping": False, "pool_recycle": 3600, "connect_args": connect_args}


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _enable_wal(path: str) -> None:
    # journal_mode=WAL is a property of the file: set it once, before Optuna creates its tables.
    con = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return text[:300]


@functools.cache
def _storage_class() -> type:
    from optuna.storages import RDBStorage

    from studyhall.storage._mirror import OwnTrialsMirror
    from studyhall.storage._versions import optuna_versions_without_alembic
    from studyhall.storage._writes import OneStatementWrites

    class HeartbeatRDBStorage(OwnTrialsMirror, OneStatementWrites, RDBStorage):
        """RDBStorage whose heartbeat thread survives a lost connection, that judges trials that
        never beat, that never reads back the trials it runs (see ``_mirror.py``) and that
        writes a parameter or attribute in one statement (``_writes.py``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with optuna_versions_without_alembic():
                super().__init__(*args, **kwargs)
            # Optuna's own default grace: two heartbeats.
            grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
            self._never_beaten = NeverBeaten(grace)

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = super()._get_stale_trial_ids(study_id)
            return stale + self._never_beaten.stale(study_id, self._unbeaten_ids(study_id))

        def _unbeaten_ids(self, study_id: int) -> list[int]:
            """The study's RUNNING trials without a heartbeat row."""
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session
            from optuna.trial import TrialState

            trial, beat = models.TrialModel, models.TrialHeartbeatModel
            with _create_scoped_session(self.scoped_session) as session:
                rows = (
                    session.query(trial.trial_id)
                    .outerjoin(beat, beat.trial_id == trial.trial_id)
                    .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING,
                            beat.trial_id.is_(None))
                )
                return [row[0] for row in rows]

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval if optuna_beats() else None

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except Exception as exc:  # the thread must live on; the next beat retries
                _logger.warning("heartbeat of trial id %d not recorded (%s); retrying", trial_id,
                                _reason(exc))

    return HeartbeatRDBStorage


def heartbeat_kwargs(heartbeat: Heartbeat | None) -> dict[str, Any]:
    """Optuna's keyword arguments for ``heartbeat`` (none: heartbeats off)."""
    if heartbeat is None:
        return {}
    return {
        "heartbeat_interval": heartbeat.interval,
        "grace_period": heartbeat.grace,
        "heartbeat_stale_trial_callback": retry_callback(heartbeat.max_retry),
    }


SCHEMA_RACE_TRIES = 20
_SCHEMA_RACE = ("already exists", "duplicate key", "duplicate entry", "unique constraint failed")
"""How a lost race to create Optuna's tables (or stamp their version) reads on SQLite,
PostgreSQL and MySQL."""


def _create(url: StorageURL, heartbeat: Heartbeat | None, optuna_kwargs: dict[str, Any]) -> Any:
    """Optuna's storage on ``url``, its tables created if missing.

    Optuna checks for each table and then creates it: processes opening a new database at the
    same moment (workers started together, a ``show`` next to the first ``run``) raced, and
    all but one failed on "table ... already exists" or a duplicate version row (measured: 4
    processes on a fresh SQLite, PostgreSQL or MariaDB database, 1-4 of them in most tries).
    A loser tries again: by then the tables it lost on exist, and Optuna skips them.
    """
    import random
    import time

    import sqlalchemy

    tries = 1
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" since 2.9
                return _storage_class()(url.url, engine_kwargs=_engine_kwargs(url),
                                        **heartbeat_kwargs(heartbeat), **optuna_kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            if tries == SCHEMA_RACE_TRIES or not any(
                    word in _reason(exc).lower() for word in _SCHEMA_RACE):
                raise
            _logger.debug("another process is creating the tables of %s (%s); again",
                          url.masked, _reason(exc))
            tries += 1
            time.sleep(random.uniform(0.02, 0.1))


def open_rdb_storage(
    url: StorageURL, heartbeat: Heartbeat | None = None, **optuna_kwargs: Any
) -> Any:
    """Connect an ``optuna.storages.RDBStorage`` to ``url``; raise ``StorageError`` if it cannot.

    Heartbeats are on when ``heartbeat`` is given (never for an in-memory database: no other
    process can see it, so no other process could notice its worker dying).
    """
    import sqlalchemy

    if url.path is not None:
        try:
            _enable_wal(url.path)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite file {url.path!r}: {exc}.") from exc
    if url.backend == "sqlite" and url.path is None:
        heartbeat = None
    try:
        storage = _create(url, heartbeat, optuna_kwargs)
    except ImportError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql"}.get(url.backend, url.backend)
        raise StorageError(
            f"the driver for {url.masked} is not installed; pip install 'studyhall[{extra}]'."
        ) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot use storage {url.masked}: {_reason(exc)}") from exc
    except RuntimeError as exc:  # Optuna's schema check: tables of another Optuna version
        raise StorageError(f"cannot use storage {url.masked}: {_reason(exc)}") from exc
    if url.path is not None:  # a file; an in-memory database would vanish with dispose()
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_on_connect)
        storage.engine.dispose()  # connections opened before the listener lack the pragmas
    elif url.backend != "sqlite":
        ping_when_idle(storage.engine)
    _logger.debug("opened storage %s", url.masked)
    return storage
