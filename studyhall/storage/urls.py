"""Storage URLs: one string picks the backend, is checked before anything connects, and is masked.

A URL is normalised to the SQLAlchemy driver we install (``postgresql://`` -> ``postgresql+psycopg://``),
so users can paste the URL their database documentation gives them. Besides the SQL databases,
``journal:///abs/file.log`` (or ``journal://relative.log``) names Optuna's journal file storage,
``redis://host:6379/0`` its journal storage on Redis, and ``grpc://host:port`` a storage proxy
(``studyhall proxy``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from studyhall.errors import StorageError

__all__ = ["DEFAULT_STORAGE", "StorageURL", "mask_url", "parse_url"]

DEFAULT_STORAGE = "sqlite:///studyhall.db"
"""Embedded SQLite file in the working directory."""

# scheme as typed -> (backend, normalised scheme)
_SCHEMES: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "sqlite"),
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "postgresql+psycopg": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mysql+pymysql"),
    "mysql+pymysql": ("mysql", "mysql+pymysql"),
    "mariadb+pymysql": ("mysql", "mysql+pymysql"),
    "journal": ("journal", "journal"),
    "redis": ("redis", "redis"),
    "rediss": ("redis", "rediss"),
    "grpc": ("grpc", "grpc"),
}
_ALLOWED = "sqlite, postgresql[+psycopg], mysql[+pymysql], journal, redis[s], grpc"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class StorageURL:
    """A validated storage URL.

    Attributes:
        url: the full URL, with any password, for connecting.
        backend: ``sqlite``, ``postgresql``, ``mysql``, ``journal`` (a log file), ``redis``
            or ``grpc``.
        path: the database file for SQLite or the log file for a journal (``None`` for an
            in-memory database or a server).
    """

    url: str
    backend: str
    path: str | None = None

    @property
    def is_rdb(self) -> bool:
        """Whether Optuna's ``RDBStorage`` (SQLAlchemy) serves this URL."""
        return self.backend in ("sqlite", "postgresql", "mysql")

    @property
    def is_file(self) -> bool:
        """Whether the storage is a local file (SQLite database or journal log)."""
        return self.path is not None

    @property
    def masked(self) -> str:
        """The URL with its password replaced by ``***``, safe to print or log."""
        return mask_url(self.url)

    def __str__(self) -> str:
        return self.masked


def mask_url(url: str) -> str:
    """Hide the password of a URL (``postgresql://u:***@host/db``); other strings pass unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


def parse_url(url: str | None, *, source: str = "the storage URL") -> StorageURL:
    """Validate a storage URL (``None`` means the default SQLite file) without connecting.

    Args:
        url: e.g. ``sqlite:///studies.db``, ``postgresql://user@127.0.0.1/test``, a bare
            ``studies.db`` path, ``journal:///abs/studies.log``, ``redis://127.0.0.1:6379/0``,
            ``grpc://host:13000``, or ``None``.
        source: where the URL came from, for error messages.

    Raises:
        StorageError: the scheme is unsupported, or a SQLite or journal file's directory does
            not exist.

    Example:
        >>> parse_url("postgresql://me:secret@db/test").masked
        'postgresql+psycopg://me:***@db/test'
    """
    if url is None:
        url = DEFAULT_STORAGE
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL from {source} must be a non-empty string; got {url!r}.")
    url = url.strip()
    if "://" not in url:
        if url.endswith(_SQLITE_SUFFIXES):
            url = "sqlite:///" + url
        else:
            raise StorageError(
                f"storage URL {mask_url(url)!r} from {source} has no scheme; use e.g. "
                "sqlite:///studies.db, postgresql://user@host/db, mysql://user@host/db, "
                "journal:///abs/studies.log or redis://host:6379/0."
            )
    scheme, _, rest = url.partition("://")
    known = _SCHEMES.get(scheme.lower())
    if known is None:
        allowed = _ALLOWED
        raise StorageError(
            f"storage URL scheme {scheme!r} from {source} is not supported; "
            f"use one of {allowed}; got {mask_url(url)!r}."
        )
    backend, scheme = known
    url = f"{scheme}://{rest}"
    if backend == "journal":
        return _journal_url(rest, source)
    if backend == "grpc":
        return _grpc_url(url, rest, source)
    if backend != "sqlite":
        host = rest.partition("/")[0].rpartition("@")[2]
        if not host:
            raise StorageError(f"storage URL {mask_url(url)!r} from {source} names no host.")
        return StorageURL(url=url, backend=backend)
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if path in ("", ":memory:"):
        return StorageURL(url="sqlite:///:memory:", backend="sqlite", path=None)
    _check_directory(path, "SQLite file", source)
    return StorageURL(url=url, backend="sqlite", path=path)


def _check_directory(path: str, what: str, source: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StorageError(
            f"{what} {path!r} from {source} is in a directory that does not exist "
            f"({directory}); create it first or pick another path."
        )
    if os.path.isdir(path):
        raise StorageError(f"{what} {path!r} from {source} is a directory; name a file in it.")


def _journal_url(rest: str, source: str) -> StorageURL:
    # journal:///abs/path.log is absolute, journal://relative.log relative to the working directory.
    path = rest.split("?", 1)[0]
    if path in ("", "/"):
        raise StorageError(
            f"journal storage URL from {source} names no file; use journal:///abs/path.log "
            "or journal://relative.log."
        )
    _check_directory(path, "journal file", source)
    return StorageURL(url=f"journal://{path}", backend="journal", path=path)


def _grpc_url(url: str, rest: str, source: str) -> StorageURL:
    host, _, port = rest.split("/", 1)[0].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StorageError(
            f"gRPC storage URL {mask_url(url)!r} from {source} must be grpc://HOST:PORT "
            "(the address `studyhall proxy` listens on)."
        )
    return StorageURL(url=f"grpc://{host}:{int(port)}", backend="grpc")
