"""Bad input to `worker` (and the storage options of `run`): exit 2, one line, nothing written."""

from __future__ import annotations

import socket

import pytest

from studyhall.cli import main
from tests.studies.workers import create, slow_spec

NAME = "known-study"
ABSENT = "/no/such/dir"


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def _snapshot(tmp_path) -> dict[str, int]:
    # SQLite may add or drop its -wal/-shm companions on open; everything else must stay as it was.
    return {
        p.name: p.stat().st_size
        for p in tmp_path.iterdir()
        if not p.name.endswith(("-wal", "-shm"))
    }


# (arguments, part of the message); {db} is a SQLite file holding NAME, {plain} one study made
# by plain Optuna, {dir} the test's directory.
CASES = {
    "unknown-study": (
        ["worker", "nope", "--storage", "{db}"],
        "no study named 'nope' in sqlite:///",
    ),
    "close-name": (["worker", "known-studyy", "--storage", "{db}"], "did you mean 'known-study'?"),
    "missing-sqlite-file": (
        ["worker", NAME, "--storage", "sqlite:///{dir}/absent.db"],
        "the file '{dir}/absent.db' does not exist",
    ),
    "missing-journal-file": (
        ["worker", NAME, "--storage", "journal://{dir}/absent.log"],
        "the file '{dir}/absent.log' does not exist",
    ),
    "no-stored-spec": (["worker", "plain", "--storage", "{plain}"], "has no stored spec"),
    "journal-missing-directory": (
        ["worker", NAME, "--storage", f"journal://{ABSENT}/s.log"],
        f"is in a directory that does not exist ({ABSENT})",
    ),
    "sqlite-missing-directory": (
        ["worker", NAME, "--storage", f"sqlite:///{ABSENT}/s.db"],
        f"is in a directory that does not exist ({ABSENT})",
    ),
    "postgres-closed-port": (
        ["worker", NAME, "--storage", "postgresql://postgres:pw@127.0.0.1:1/test"],
        "cannot use storage postgresql+psycopg://postgres:***@127.0.0.1:1/test",
    ),
    "redis-closed-port": (
        ["worker", NAME, "--storage", "redis://:pw@127.0.0.1:1/0"],
        "cannot use storage redis://:***@127.0.0.1:1/0",
    ),
    "unknown-scheme": (["worker", NAME, "--storage", "ftp://host/x"], "storage URL scheme 'ftp'"),
    "no-scheme": (["worker", NAME, "--storage", "somewhere"], "has no scheme"),
    "zero-trials": (
        ["worker", NAME, "--trials", "0"],
        "argument --trials: must be a positive integer; got '0'",
    ),
    "word-trials": (
        ["worker", NAME, "--trials", "lots"],
        "argument --trials: must be a positive integer",
    ),
    "negative-timeout": (
        ["worker", NAME, "--timeout", "-5"],
        "argument --timeout: must be a positive number",
    ),
    "word-timeout": (
        ["worker", NAME, "--timeout", "soon"],
        "argument --timeout: must be a positive number",
    ),
    "zero-threads": (
        ["worker", NAME, "--threads", "0"],
        "argument --threads: must be a positive integer",
    ),
    "zero-heartbeat": (
        ["worker", NAME, "--heartbeat", "0"],
        "argument --heartbeat: must be a positive whole",
    ),
    "fractional-grace": (
        ["run", "beale-tpe", "--grace", "2.5"],
        "argument --grace: must be a positive whole",
    ),
    "grace-not-above-heartbeat": (
        ["worker", NAME, "--storage", "{db}", "--heartbeat", "5", "--grace", "5"],
        "grace period (5 s) must be longer than the heartbeat interval (5 s)",
    ),
    "no-study-name": (["worker"], "the following arguments are required: study"),
    "run-journal-missing-directory": (
        ["run", "beale-tpe", "--storage", f"journal://{ABSENT}/s.log"],
        f"({ABSENT})",
    ),
    "run-redis-closed-port": (
        ["run", "beale-tpe", "--storage", "redis://127.0.0.1:1/0"],
        "cannot use storage redis://127.0.0.1:1/0",
    ),
    "grace-below-heartbeat": (
        ["worker", NAME, "--storage", "{db}", "--heartbeat", "10", "--grace", "4"],
        "grace period (4 s) must be longer than the heartbeat interval (10 s)",
    ),
    "word-heartbeat": (
        ["run", "beale-tpe", "--heartbeat", "soon"],
        "argument --heartbeat: must be a positive whole number of seconds; got 'soon'",
    ),
    "worker-in-memory-sqlite": (
        ["worker", NAME, "--storage", "sqlite:///:memory:"],
        "a worker cannot join an in-memory SQLite database",
    ),
    "run-workers-in-memory-sqlite": (
        ["run", "beale-tpe", "--storage", "sqlite:///:memory:", "--workers", "2"],
        "several workers cannot share an in-memory SQLite database",
    ),
    "run-over-a-study-without-spec": (
        ["run", "beale-tpe", "--storage", "{plain}"],
        "study 'beale-tpe' in sqlite:///{dir}/plain.db was not created by studyhall",
    ),
    "mysql-closed-port": (
        ["worker", NAME, "--storage", "mysql://root:pw@127.0.0.1:1/test"],
        "cannot use storage mysql+pymysql://root:***@127.0.0.1:1/test",
    ),
    "postgres-unknown-role": (
        ["worker", NAME, "--storage", "postgresql://nobody_9x:pw@127.0.0.1:5432/test"],
        'role "nobody_9x" does not exist',
    ),
    "postgres-unknown-database": (
        ["worker", NAME, "--storage", "postgresql://postgres@127.0.0.1:5432/no_such_db_9x"],
        'database "no_such_db_9x" does not exist',
    ),
    "proxy-missing-directory": (
        ["proxy", "--storage", f"sqlite:///{ABSENT}/s.db"],
        f"is in a directory that does not exist ({ABSENT})",
    ),
    "proxy-closed-port-storage": (
        ["proxy", "--storage", "postgresql://postgres:pw@127.0.0.1:1/test"],
        "cannot use storage postgresql+psycopg://postgres:***@127.0.0.1:1/test",
    ),
    "proxy-journal": (
        ["proxy", "--storage", "journal://{dir}/s.log"],
        "the gRPC proxy serves SQL storages only",
    ),
    "proxy-port-in-use": (
        ["proxy", "--storage", "{db}", "--port", "{busy}"],
        "cannot listen on 127.0.0.1:{busy}: the port is taken",
    ),
    "dask-closed-port": (
        ["run", "beale-tpe", "--storage", "sqlite:///{dir}/new.db", "--dask", "tcp://127.0.0.1:1"],
        "no Dask scheduler answers at tcp://127.0.0.1:1 (Connection refused)",
    ),
    "dask-no-port": (
        ["run", "beale-tpe", "--storage", "sqlite:///{dir}/fresh.db", "--dask", "nohost"],
        "--dask address 'nohost' must be [tcp://]HOST:PORT",
    ),
    "dask-bad-scheme": (
        ["run", "beale-tpe", "--storage", "{db}", "--dask", "ftp://127.0.0.1:8786"],
        "--dask address 'ftp://127.0.0.1:8786' must be [tcp://]HOST:PORT",
    ),
    "dask-in-memory-sqlite": (
        ["run", "beale-tpe", "--storage", "sqlite:///:memory:", "--dask", "tcp://127.0.0.1:1"],
        "Dask tasks cannot share an in-memory SQLite database",
    ),
    "dask-bad-storage-first": (
        ["run", "beale-tpe", "--storage", f"sqlite:///{ABSENT}/s.db", "--dask", "127.0.0.1:1"],
        f"({ABSENT})",
    ),
}


@pytest.fixture
def places(tmp_path, study_name):
    import optuna

    db = f"sqlite:///{tmp_path / 'studies.db'}"
    create(slow_spec(NAME, 2), db)
    plain = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(study_name="plain", storage=plain)
    optuna.create_study(study_name="beale-tpe", storage=plain)
    with socket.socket() as busy:  # a port some other program listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield {"db": db, "plain": plain, "dir": str(tmp_path), "busy": busy.getsockname()[1]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_worker_input_exits_2_with_one_line_and_writes_nothing(
    case, places, tmp_path, capsys, request
):
    args, message = CASES[case]
    if any("127.0.0.1:5432" in a for a in args):
        request.getfixturevalue("postgres_url")  # skips (or fails in CI) without PostgreSQL
    args = [a.format(**places) for a in args]
    before = _snapshot(tmp_path)
    assert _run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(("studyhall: error: ", f"studyhall {args[0]}: error: "))
    assert "\n" not in err
    assert message.format(**places) in err
    assert ":pw@" not in err
    assert _snapshot(tmp_path) == before


def test_a_wrong_password_is_refused_without_showing_it(mysql_url, capsys):
    url = mysql_url.replace("root@", "root:wrong-pw-9@")
    assert _run(["worker", NAME, "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert "Access denied" in err and "wrong-pw-9" not in err and "\n" not in err


def test_a_bad_heartbeat_in_the_environment_exits_2(places, monkeypatch, capsys):
    monkeypatch.setenv("STUDYHALL_HEARTBEAT", "often")
    assert _run(["worker", NAME, "--storage", places["db"]]) == 2
    assert "`STUDYHALL_HEARTBEAT` from the environment" in capsys.readouterr().err
