"""Optuna's schema version bookkeeping, without importing alembic to open a storage.

Every ``RDBStorage`` records its schema's alembic revision, and checks it, through alembic:
importing it, reading Optuna's ten migration scripts, stamping a new database. That was
0.28-0.30 s of every process that opens a storage here (alembic's import alone 0.12-0.13 s),
where a worker's whole start is about 1 s and a warm TPE search of the P3 benchmark under 2 s.
The bookkeeping itself is one table of one row: ``VersionManager`` reads and writes it with
SQLAlchemy, and knows the newest revision from the scripts' ``revision``/``down_revision``
lines. What needs alembic for real (an old database that predates it, a schema to upgrade, the
error that names the known revisions) still goes Optuna's way.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["optuna_versions_without_alembic"]

_TABLE = "alembic_version"  # alembic's defaults, which Optuna's env.py keeps
_LINE = re.compile(r"""^(down_revision|revision)\s*=\s*(?:["']([^"']+)["']|None)\s*$""", re.M)
_SWAP = threading.Lock()


@functools.cache
def head_revision() -> str | None:
    """The revision no other of Optuna's migration scripts revises (None: not exactly one)."""
    import optuna.storages._rdb as rdb

    versions = os.path.join(os.path.dirname(rdb.__file__), "alembic", "versions")
    revisions: set[str | None] = set()
    revised: set[str | None] = set()
    for name in os.listdir(versions):
        if name.endswith(".py"):
            with open(os.path.join(versions, name), encoding="utf-8") as f:
                found: dict[str, str | None] = {m[1]: m[2] for m in _LINE.finditer(f.read())}
            if "revision" not in found:
                return None
            revisions.add(found["revision"])
            revised.add(found.get("down_revision"))
    heads = revisions - revised - {None}
    return str(heads.pop()) if len(heads) == 1 else None


@functools.cache
def _version_manager_class() -> type:
    import sqlalchemy
    from optuna.storages._rdb.storage import _VersionManager

    table = sqlalchemy.Table(
        _TABLE, sqlalchemy.MetaData(),
        sqlalchemy.Column("version_num", sqlalchemy.String(32), nullable=False),
        sqlalchemy.PrimaryKeyConstraint("version_num", name=f"{_TABLE}_pkc"),
    )

    class VersionManager(_VersionManager):
        """Optuna's ``_VersionManager``; the version table read and stamped with SQLAlchemy."""

        def _init_alembic(self) -> None:
            if self._current() is not None:
                return
            head = head_revision()
            if head is None or not self._is_alembic_supported():  # older than alembic: its base
                super()._init_alembic()
                return
            with self.engine.begin() as connection:  # a lost race: _rdb._create tries again
                table.create(connection, checkfirst=True)
                connection.execute(table.insert().values(version_num=head))

        def _current(self) -> str | None:
            with self.engine.connect() as connection:
                if not sqlalchemy.inspect(connection).has_table(_TABLE):
                    return None
                rows = connection.execute(sqlalchemy.select(table.c.version_num)).all()
            if len(rows) > 1:
                raise RuntimeError(f"the storage's {_TABLE} table holds {len(rows)} revisions")
            return rows[0][0] if rows else None

        def get_current_version(self) -> str:
            current = self._current()
            assert current is not None
            return current

        def get_head_version(self) -> str:
            return head_revision() or super().get_head_version()

    return VersionManager


@contextlib.contextmanager
def optuna_versions_without_alembic() -> Iterator[None]:
    """Inside, an ``RDBStorage`` being created keeps its schema version with ``VersionManager``.

    Optuna builds its ``_VersionManager`` inside ``RDBStorage.__init__``, by name: the name
    is bound to the subclass for the duration (under a lock: another thread's storage would
    get the same bookkeeping, written the same way).
    """
    from optuna.storages._rdb import storage as module

    with _SWAP:
        original: Any = module._VersionManager
        module._VersionManager = _version_manager_class()  # type: ignore[misc,assignment]
        try:
            yield
        finally:
            module._VersionManager = original  # type: ignore[misc]
