"""Admission locks: one worker at a time decides whether the study needs another trial.

A worker counts the study's finished and running trials and then asks Optuna for a new trial.
Two workers doing that at the same moment would both see one trial missing and both start one,
so a study of N trials could end with N+1. Holding a lock across "count, then ask" (a few
milliseconds; never while a trial runs) makes the budget exact across processes and machines.
Each lock dies with its holder: a killed worker cannot block the others.

- SQLite: ``flock`` on ``<database>.admit`` (the database file itself must not be opened twice:
  closing a second descriptor would drop SQLite's own POSIX locks).
- PostgreSQL: ``pg_advisory_xact_lock``, held by an open transaction that the release commits
  (a connection lost or handed back to the pool any other way rolls back, and the lock goes
  with it: no session can keep it by accident); MySQL/MariaDB: ``GET_LOCK`` (ends with the
  connection).
- Journal file: Optuna's ``JournalFileOpenLock`` on ``<log>.admit`` (``O_EXCL``, NFS-safe;
  broken after the grace period if its holder died).
- Redis: a ``SET NX`` lock with an expiry.
- gRPC proxy: none available; the budget may then overshoot by up to one trial per worker.

A server lock can still be lost while it is held: the connection that holds it drops (a
restarted proxy, a killed session) or the Redis key expires. ``release`` says whether the lock
was held without a break since ``acquire``, so the worker can count again (``worker._recount``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Any, Protocol

from studyhall.storage.urls import StorageURL

__all__ = ["AdmissionLock", "admission_lock"]

_logger = logging.getLogger(__name__)

LOCK_WAIT_S = 600
"""How long a worker waits for the lock before concluding something is wrong."""


class AdmissionLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> bool:
        """Release the lock (if held); ``False`` if it may have been lost since ``acquire``."""


def _key(study_name: str) -> str:
    return hashlib.sha1(f"studyhall:{study_name}".encode()).hexdigest()


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> bool:
        return True


class _FileLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd

    def release(self) -> bool:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock (which nothing else can break)
            self.fd = None
        return True


class _SQLLock:
    """A named lock on a connection of the storage's own engine (see the module docstring)."""

    def __init__(self, engine: Any, backend: str, study_name: str) -> None:
        import sqlalchemy

        self.engine = engine
        self.conn: Any = None
        key = _key(study_name)
        if backend == "postgresql":
            number = int(key[:15], 16)  # fits a signed 64-bit integer
            self.lock = sqlalchemy.text(f"SELECT pg_advisory_xact_lock({number})")
            self.unlock = None  # the commit ends the transaction, and the lock with it
        else:
            name = f"studyhall:{key[:40]}"
            self.lock = sqlalchemy.text(f"SELECT GET_LOCK('{name}', {LOCK_WAIT_S})")
            self.unlock = sqlalchemy.text(f"SELECT RELEASE_LOCK('{name}')")

    def acquire(self) -> None:
        import sqlalchemy

        conn = self.engine.connect()
        try:
            if self.unlock is None:  # PostgreSQL: the transaction stays open until release()
                conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
                conn.execute(self.lock)
            else:
                got = conn.execute(self.lock).scalar()
                conn.commit()
                if got == 0:  # GET_LOCK timed out
                    raise TimeoutError(f"admission lock not acquired in {LOCK_WAIT_S} s")
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        self.conn = conn

    def release(self) -> bool:
        conn, self.conn = self.conn, None
        if conn is None:
            return True
        try:
            # The same connection, never reconnected while checked out: a commit of the lock's
            # transaction (PostgreSQL) or RELEASE_LOCK's 1 (MySQL) proves it was held throughout.
            held = True if self.unlock is None else conn.execute(self.unlock).scalar() == 1
            conn.commit()
            conn.close()
            return held
        except Exception as exc:  # the connection died: the server dropped the lock with it
            _logger.debug("admission lock lost with its connection: %s", exc)
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                pass
            return False


class _JournalFileLock:
    def __init__(self, path: str, grace: int) -> None:
        from optuna.storages.journal import JournalFileOpenLock

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a grace period under 3 s (tests) is fine here
            self.lock = JournalFileOpenLock(path, grace_period=grace)
        self.held = False

    def acquire(self) -> None:
        self.lock.acquire()
        self.held = True

    def release(self) -> bool:
        if self.held:
            self.held = False
            try:
                self.lock.release()
            except RuntimeError:  # broken by another worker after the grace period
                return False
        return True


class _RedisLock:
    def __init__(self, url: str, study_name: str, grace: int) -> None:
        import redis

        from studyhall.storage._journal import redis_options

        full, prefix = redis_options(url)
        self.lock = redis.Redis.from_url(full).lock(
            f"{prefix}:studyhall:admit:{_key(study_name)}",
            timeout=grace,
            blocking_timeout=LOCK_WAIT_S,
        )
        self.held = False

    def acquire(self) -> None:
        if not self.lock.acquire():
            raise TimeoutError(f"admission lock not acquired in {LOCK_WAIT_S} s")
        self.held = True

    def release(self) -> bool:
        if self.held:
            self.held = False
            try:
                self.lock.release()
            except Exception:  # expired (held past its timeout), or Redis away: unknown
                return False
        return True


def admission_lock(
    storage: Any, url: StorageURL, study_name: str, grace: int = 30
) -> AdmissionLock:
    """The admission lock for ``study_name`` in the storage ``url`` names.

    Args:
        storage: the opened storage (its SQL engine is reused for server locks).
        url: the storage's URL.
        study_name: the study whose admissions the lock serialises.
        grace: seconds after which a file or Redis lock whose holder died is broken.
    """
    if url.backend == "sqlite":
        return _FileLock(f"{url.path}.admit") if url.path else _NoLock()
    if url.backend in ("postgresql", "mysql"):
        return _SQLLock(storage.engine, url.backend, study_name)
    if url.backend == "journal":
        assert url.path is not None
        return _JournalFileLock(f"{url.path}.admit", grace)
    if url.backend == "redis":
        return _RedisLock(url.url, study_name, grace)
    return _NoLock()
