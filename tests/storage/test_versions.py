"""Optuna's schema version, kept without alembic: the same table and row Optuna's alembic keeps."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import optuna
import pytest
import sqlalchemy

from studyhall import StorageError
from studyhall.storage import open_storage
from studyhall.storage._versions import head_revision


def test_the_newest_revision_is_the_one_alembic_finds():
    plain = optuna.storages.RDBStorage("sqlite:///:memory:")  # Optuna's own, through alembic
    assert head_revision() == plain._version_manager.get_head_version()


@pytest.mark.parametrize("new_database", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_a_new_database_is_stamped_as_optuna_stamps_it(new_database):
    open_storage(new_database)
    plain = optuna.storages.RDBStorage(new_database)  # its own check, with alembic, passes
    assert plain.get_current_version() == plain.get_head_version() == head_revision()
    engine = sqlalchemy.create_engine(new_database)
    try:
        inspector = sqlalchemy.inspect(engine)
        (column,) = inspector.get_columns("alembic_version")
        assert column["name"] == "version_num" and not column["nullable"]
        assert column["type"].length == 32
        assert inspector.get_pk_constraint("alembic_version")["constrained_columns"] == [
            "version_num"]
    finally:
        engine.dispose()


def test_the_version_table_is_the_one_alembic_creates(tmp_path):
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    open_storage(f"sqlite:///{tmp_path / 'ours.db'}")

    def schema(name: str) -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / name) as con:
            return con.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()

    assert schema("ours.db") == schema("optuna.db")


def test_opening_a_storage_new_or_not_imports_no_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code = ("import sys; from studyhall.storage import open_storage; "
            f"open_storage({url!r}); open_storage({url!r}); "
            "print('ALEMBIC', 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "ALEMBIC False" in out.stdout, out.stdout + out.stderr


def test_an_older_schema_is_refused_with_optunas_advice_and_upgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    open_storage(url)
    with sqlite3.connect(tmp_path / "old.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    with pytest.raises(StorageError, match=r"optuna storage upgrade --storage"):
        open_storage(url)
    with sqlite3.connect(tmp_path / "old.db") as con:  # nothing written by the refusal
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("v3.0.0.d",)]
    optuna.storages.RDBStorage(url, skip_compatibility_check=True).upgrade()  # alembic reads it
    assert open_storage(url).get_current_version() == head_revision()
