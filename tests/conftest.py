"""Shared fixtures: storage URLs for every backend, real servers on loopback.

A test that needs PostgreSQL or MariaDB skips with the reason when the server is unreachable,
and fails instead when STUDYHALL_REQUIRE_SERVICES=1 (as in CI), so CI cannot pass vacuously.
"""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get("STUDYHALL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("STUDYHALL_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("STUDYHALL_REQUIRE_SERVICES") == "1"


def _reachable(url: str) -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not here"
        return " ".join(str(exc).split())[:200]


def _server(url: str, what: str) -> str:
    problem = _reachable(url)
    if problem is not None:
        message = f"{what} not reachable at {url}: {problem}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (STUDYHALL_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _server(POSTGRES_URL, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return _server(MYSQL_URL, "MariaDB/MySQL")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def any_storage(request, tmp_path) -> str:
    """Every RDB backend in turn."""
    return storage_for(request.param, request)


@pytest.fixture
def study_name() -> str:
    """A name no other test (or earlier run on a shared server) has used."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    # The default storage is ./studyhall.db: keep tests from writing into the checkout.
    monkeypatch.chdir(tmp_path)


def beale_spec(name: str, sampler="tpe", n_trials=20, **extra) -> dict:
    """A Beale spec dict; grid-friendly (stepped) when the sampler is grid."""
    if sampler == "grid":
        space = {"x": {"low": -4.5, "high": 4.5, "step": 1.5},
                 "y": {"low": -4.5, "high": 4.5, "step": 1.5}}
    else:
        space = {"x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}}
    return {"name": name, "objective": "beale", "space": space, "sampler": sampler,
            "n_trials": n_trials, "seed": 1, **extra}


REDIS_URL = os.environ.get("STUDYHALL_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url():
    """A Redis journal of its own (a fresh key prefix), deleted afterwards."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:
        message = f"Redis not reachable at {REDIS_URL}: {' '.join(str(exc).split())[:200]}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (STUDYHALL_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    yield f"{REDIS_URL}?prefix={prefix}"
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def journal_url(tmp_path) -> str:
    return f"journal://{tmp_path / 'studies.log'}"  # journal:///abs/path


SERVER_URL_FIXTURES = {"postgresql": "postgres_url", "mysql": "mysql_url",
                       "journal": "journal_url", "redis": "redis_url"}
"""The fixture giving each non-SQLite backend's URL."""


def storage_for(backend: str, request) -> str:
    """A storage URL of ``backend`` (sqlite, postgresql, mysql, journal, redis) for this test;
    a study named ``study_name`` on a server is deleted afterwards."""
    import contextlib

    if backend == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue(SERVER_URL_FIXTURES[backend])
    if backend in ("postgresql", "mysql"):
        name = request.getfixturevalue("study_name")

        def drop() -> None:
            import optuna

            from studyhall.storage import open_storage

            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=open_storage(url))

        request.addfinalizer(drop)
    return url


def kill_session(url: str, lock) -> None:
    """End the server session that holds ``lock`` (what a restarted proxy or DBA does)."""
    import sqlalchemy

    from studyhall.storage import parse_url

    postgres = parse_url(url).backend == "postgresql"
    own = lock.conn.execute(sqlalchemy.text(
        "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()")).scalar()
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text(
                f"SELECT pg_terminate_backend({int(own)})" if postgres else f"KILL {int(own)}"))
            con.commit()
    finally:
        engine.dispose()


@pytest.fixture
def new_database(request, tmp_path, study_name):
    """A URL to a database with no tables yet: a new file, or a new database on the server."""
    import sqlalchemy

    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    server = request.getfixturevalue(SERVER_URL_FIXTURES[backend])
    name = "studyhall_new_" + study_name.replace("-", "_")
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield sqlalchemy.engine.make_url(server).set(database=name).render_as_string(
            hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""  # a session left behind
        with admin.connect() as con:
            con.execute(sqlalchemy.text(f"DROP DATABASE {name}{force}"))
        admin.dispose()
