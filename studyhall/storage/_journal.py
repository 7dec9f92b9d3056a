"""Optuna's journal storage: an append-only operation log in a file or in Redis.

The file backend uses ``JournalFileOpenLock`` (an ``O_EXCL`` lock file), which works on NFS v3+
where SQLite's ``fcntl`` locks do not: the storage for many machines sharing a file system.
Redis suits many machines without a shared file system or SQL server.

Optuna's ``JournalStorage`` has no heartbeat of its own (only ``RDBStorage`` implements
``BaseHeartbeat``), so this module adds one: each heartbeat is a trial system attribute holding
the writer's wall-clock time, and a trial is stale when both that time and its start are older
than the grace period. Optuna's optimize loop, stale check and retry callback then work exactly as
for SQL storages. Workers on different machines compare clocks, so keep them in sync (NTP): the
grace period (30 s by default) dwarfs ordinary clock skew.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from typing import Any

from studyhall.errors import StorageError
from studyhall.storage.heartbeat import Heartbeat, NeverBeaten, optuna_beats, retry_callback
from studyhall.storage.urls import StorageURL

__all__ = ["HEARTBEAT_ATTR", "attr_heartbeat_mixin", "open_journal_storage", "redis_options"]

_logger = logging.getLogger(__name__)

HEARTBEAT_ATTR = "studyhall:heartbeat"
"""Trial system attribute holding the time (seconds since the epoch) of the last heartbeat."""

REDIS_TIMEOUT_S = 10
"""Connect and socket timeout for Redis, so an unreachable server is an error, not a hang."""


@functools.cache
def attr_heartbeat_mixin() -> type:
    """A ``BaseHeartbeat`` kept in trial system attributes, for storages without one of their own.

    The class using it calls ``_setup_heartbeat(heartbeat)`` in its ``__init__``.
    """
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class AttrHeartbeat(BaseHeartbeat):
        _heartbeat: Heartbeat | None = None
        _retry: Any = None
        _never_beaten: NeverBeaten | None = None

        def _setup_heartbeat(self, heartbeat: Heartbeat | None) -> None:
            self._heartbeat = heartbeat
            self._retry = retry_callback(heartbeat.max_retry) if heartbeat else None
            self._never_beaten = NeverBeaten(heartbeat.grace) if heartbeat else None

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[attr-defined]
            except Exception as exc:  # finished meanwhile, or the backend is away: beat again later
                _logger.debug("heartbeat of trial id %d not recorded: %s", trial_id, exc)

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            assert self._heartbeat is not None
            limit = time.time() - self._heartbeat.grace
            stale, unbeaten = [], []
            running = self.get_all_trials(  # type: ignore[attr-defined]
                study_id, deepcopy=False, states=(TrialState.RUNNING,)
            )
            for trial in running:
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                if beat is None:  # lost before its first beat? (see ``heartbeat.py``)
                    unbeaten.append(trial._trial_id)
                    continue
                # A retried trial inherits its original's last beat: its own start counts too.
                started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
                if max(float(beat), started) < limit:
                    stale.append(trial._trial_id)
            assert self._never_beaten is not None
            return stale + self._never_beaten.stale(study_id, unbeaten)

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat.interval if self._heartbeat and optuna_beats() else None

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return self._retry

    return AttrHeartbeat


@functools.cache
def _storage_class() -> type:
    from optuna.storages import JournalStorage

    class HeartbeatJournalStorage(attr_heartbeat_mixin(), JournalStorage):  # type: ignore[misc]
        """JournalStorage with heartbeats kept as trial system attributes."""

        def __init__(self, backend: Any, heartbeat: Heartbeat | None) -> None:
            JournalStorage.__init__(self, backend)
            self._setup_heartbeat(heartbeat)

        def __getstate__(self) -> dict[Any, Any]:
            state = JournalStorage.__getstate__(self)
            state.pop("_retry", None)
            return state

        def __setstate__(self, state: dict[Any, Any]) -> None:
            JournalStorage.__setstate__(self, state)
            self._setup_heartbeat(self._heartbeat)

    return HeartbeatJournalStorage


def _file_backend(url: StorageURL, heartbeat: Heartbeat | None) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    assert url.path is not None
    # A lock file left by a killed writer is broken after this long without a change. Every
    # writer waits that long, heartbeats included: a break after the heartbeat grace (as before)
    # made a worker killed while appending take every live trial down with it (3 of 5 Keras kill
    # tests here). Half of what the grace leaves after one interval keeps live trials alive.
    grace = max(1, (heartbeat.grace - heartbeat.interval) // 2) if heartbeat else 30
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a grace period under 3 s (tests) is fine here
            lock = JournalFileOpenLock(url.path, grace_period=grace)
        return JournalFileBackend(url.path, lock_obj=lock)
    except OSError as exc:
        raise StorageError(
            f"cannot open journal file {url.path!r}: {exc.strerror or exc}."
        ) from exc


def redis_options(url: str) -> tuple[str, str]:
    """The URL for redis-py (with timeouts) and the key prefix given as ``?prefix=NAME``.

    A prefix keeps several teams' (or test runs') journals apart on one Redis database; each
    worker replays its whole journal when it starts, so unrelated studies cost time there.
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", "")
    query.setdefault("socket_connect_timeout", str(REDIS_TIMEOUT_S))
    query.setdefault("socket_timeout", str(REDIS_TIMEOUT_S))
    return urlunsplit(parts._replace(query=urlencode(query))), prefix


def _redis_backend(url: StorageURL) -> Any:
    try:
        import redis
        from optuna.storages.journal import JournalRedisBackend
    except ImportError as exc:
        raise StorageError(
            f"Redis storage {url.masked} needs the redis package; pip install 'studyhall[redis]'."
        ) from exc
    full, prefix = redis_options(url.url)
    try:
        redis.Redis.from_url(full).ping()
    except (redis.RedisError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise StorageError(f"cannot use storage {url.masked}: {reason}") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 3.1
        return JournalRedisBackend(full, prefix=prefix)


def open_journal_storage(url: StorageURL, heartbeat: Heartbeat | None = None) -> Any:
    """Open the journal storage a ``journal://`` or ``redis://`` URL names.

    Raises:
        StorageError: the file cannot be created or read, or Redis cannot be reached.
    """
    backend = _file_backend(url, heartbeat) if url.backend == "journal" else _redis_backend(url)
    try:
        storage = _storage_class()(backend, heartbeat)
    except (OSError, ValueError) as exc:  # unreadable or corrupt log
        raise StorageError(f"cannot use storage {url.masked}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            raise StorageError(f"cannot use storage {url.masked}: {exc}") from exc
        raise
    _logger.debug("opened storage %s", url.masked)
    return storage
