"""Where studies live: storage URLs and the tuned Optuna storages behind them."""

from __future__ import annotations

import os
from typing import Any

from studyhall.errors import StorageError, StudyNotFoundError
from studyhall.storage._locks import AdmissionLock, admission_lock
from studyhall.storage._rdb import open_rdb_storage
from studyhall.storage.heartbeat import Heartbeat
from studyhall.storage.urls import DEFAULT_STORAGE, StorageURL, mask_url, parse_url

__all__ = [
    "DEFAULT_STORAGE",
    "AdmissionLock",
    "Heartbeat",
    "StorageURL",
    "admission_lock",
    "is_transient",
    "mask_url",
    "open_storage",
    "parse_url",
]


def open_storage(
    url: str | StorageURL | None = None,
    *,
    heartbeat: Heartbeat | None = None,
    must_exist: bool = False,
    **optuna_kwargs: Any,
) -> Any:
    """Open the Optuna storage a URL names (``None``: the default SQLite file).

    Args:
        url: a storage URL (see ``parse_url``).
        heartbeat: heartbeat settings for workers; ``None`` opens it without heartbeats, which
            is right for reading.
        must_exist: refuse (rather than create) a SQLite or journal file that is not there.
        optuna_kwargs: passed on to ``RDBStorage`` (SQL storages only).

    Raises:
        StorageError: bad URL, missing driver, or a database that cannot be reached.
        StudyNotFoundError: ``must_exist`` and the file is missing.

    Example:
        >>> storage = open_storage("sqlite:///:memory:")
    """
    parsed = url if isinstance(url, StorageURL) else parse_url(url)
    if must_exist and parsed.path is not None and not os.path.exists(parsed.path):
        raise StudyNotFoundError(
            f"no studies in {parsed.masked}: the file {parsed.path!r} does not exist."
        )
    if parsed.is_rdb:
        return open_rdb_storage(parsed, heartbeat, **optuna_kwargs)
    if parsed.backend in ("journal", "redis"):
        from studyhall.storage._journal import open_journal_storage

        return open_journal_storage(parsed, heartbeat)
    if parsed.backend == "grpc":
        from studyhall.storage._grpc import open_grpc_storage

        return open_grpc_storage(parsed, heartbeat)
    raise StorageError(f"no storage for {parsed.masked}")  # pragma: no cover - parse_url refuses


_TRANSIENT_NAMES = {
    "OperationalError", "InterfaceError", "DisconnectionError", "StorageInternalError",
    "ConnectionError", "TimeoutError", "BusyLoadingError", "ConnectionResetError",
    "ConnectionRefusedError", "BrokenPipeError",
}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it came from) looks like a lost or refused connection.

    Such errors end when the database is back; a worker waits and tries again instead of
    failing. Bad SQL, bad data and studyhall's own errors are never transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StudyNotFoundError):
            return False
        if type(current).__name__ in _TRANSIENT_NAMES:
            return True
        if getattr(current, "connection_invalidated", False):  # SQLAlchemy: the link dropped
            return True
        code = getattr(current, "code", None)
        if callable(code) and getattr(code(), "name", None) == "UNAVAILABLE":  # gRPC: proxy away
            return True
        current = current.__cause__ or current.__context__
    return False
