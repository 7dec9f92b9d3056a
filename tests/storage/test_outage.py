"""A PostgreSQL restart under running workers: they wait it out and the study ends whole.

The restart test stops the real server on this machine for about five seconds, and starts it
again in a ``finally`` whatever happens. It skips where the server is not a local cluster it can
control, and where STUDYHALL_OUTAGE_TESTS=0. The first test replays, on every storage and without
a restart, what made the restart test hang: a trial left RUNNING without a single heartbeat. The
dropped-connections test ends only the workers' own sessions, again and again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

import pytest
import yaml

from studyhall import join_study
from studyhall.storage import Heartbeat, open_storage
from tests.conftest import beale_spec, storage_for
from tests.studies.workers import create, kill_group, slow_spec, start, states, trials, wait_for

OUTAGE_S = 5


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql", "journal", "redis"])
def test_a_trial_lost_before_its_first_heartbeat_is_failed_and_retried(
    backend, request, study_name
):
    import optuna

    url, n, grace = storage_for(backend, request), 3, 2
    create(beale_spec(study_name, sampler="random", n_trials=n), url)
    # A worker created this trial and lost it before its first heartbeat: the database went away
    # in that instant (as in the restart test below, 1 run in 4), or the worker was killed.
    # Optuna's stale check skips a trial without a heartbeat, so it stayed RUNNING, and a worker
    # waiting for the study's last trial waited for ever.
    lost = optuna.load_study(study_name=study_name, storage=open_storage(url)).ask()
    began = time.monotonic()
    join_study(study_name, url, heartbeat=Heartbeat(interval=1, grace=grace), timeout=30)
    took = time.monotonic() - began
    assert states(url, study_name) == {"COMPLETE": n, "FAIL": 1}
    everything = trials(url, study_name)
    assert next(t for t in everything if t.number == lost.number).state.name == "FAIL"
    retry = [t for t in everything if t.system_attrs.get("failed_trial") == lost.number]
    assert [t.state.name for t in retry] == ["COMPLETE"]
    assert took < grace + 6, f"the lost trial was retried only after {took:.1f} s"


def test_a_postgresql_connection_gives_up_on_a_silent_server_in_about_a_minute(postgres_url):
    import socket

    storage = open_storage(postgres_url, heartbeat=Heartbeat(interval=1, grace=2))
    connection = storage.engine.raw_connection()
    try:
        sock = socket.socket(fileno=os.dup(connection.driver_connection.pgconn.socket))
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            idle, interval, count = (
                sock.getsockopt(socket.IPPROTO_TCP, option)
                for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
            )
    finally:
        connection.close()
    assert idle + interval * count <= 120  # not Linux's default of two hours and more


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no local PostgreSQL cluster to restart (pg_ctlcluster)")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


def _ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0


def _ensure_started(cluster: list[str]) -> None:
    if not _ready():
        subprocess.run([*cluster, "start"], capture_output=True, timeout=60)
    wait_for(_ready, 60, "PostgreSQL to accept connections again", every=0.5)


def _dump_stacks(proc: subprocess.Popen) -> None:
    """Make every process of ``run`` print its threads' stacks (faulthandler), then kill them."""
    import signal

    import psutil

    parent = psutil.Process(proc.pid)
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGUSR1)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)


def _sessions(url: str) -> list:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as con:
        rows = con.execute(sqlalchemy.text(
            "SELECT pid, state, wait_event_type, wait_event, left(query, 80) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _two_workers(url: str, name: str, n: int, tmp_path) -> subprocess.Popen:
    """``run --workers 2`` on a study of ``n`` 1.5 s trials, once two trials are complete."""
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(slow_spec(name, n, steps=10, step_s=0.15)))
    proc = start("run", str(spec), "--storage", url, "--workers", "2", "-q",
                 "--heartbeat", "1", "--grace", "4", cwd=tmp_path)
    try:
        wait_for(lambda: states(url, name).get("COMPLETE", 0) >= 2, 120, "two trials")
    except BaseException:
        kill_group(proc)
        raise
    return proc


def _finish(proc: subprocess.Popen, url: str) -> tuple[int, str]:
    """Wait for ``run`` to end; if it does not within 120 s, say where it is stuck."""
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        sessions = _sessions(url)
        _dump_stacks(proc)
        _, err = proc.communicate()
        raise AssertionError(f"`run` did not end in 120 s; sessions: {sessions}; "
                             f"stderr: {err[-12000:]}") from None
    return proc.returncode, err


def _assert_whole(url: str, name: str, n: int, code: int, err: str) -> dict[str, int]:
    """The study holds exactly ``n`` complete trials and nothing left running or waiting."""
    import optuna

    try:
        counts = states(url, name)
        # Trials cut by the outage end FAIL and are retried; a worker may also give up cleanly
        # (the study is still whole, so `run` succeeds either way).
        assert code == 0, err
        assert counts["COMPLETE"] == n
        assert "RUNNING" not in counts and "WAITING" not in counts
        return counts
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url))


def _client_ports(proc: subprocess.Popen, server_port: int) -> list[int]:
    """The local ports of the connections that ``run``'s processes hold to the server."""
    import psutil

    ports = []
    parent = psutil.Process(proc.pid)
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            listing = getattr(process, "net_connections", None) or process.connections
            ports += [c.laddr.port for c in listing(kind="tcp")
                      if c.raddr and c.raddr.port == server_port]
    return ports


def _terminate(url: str, ports: list[int]) -> int:
    """End the server sessions of those client ports (and no other's); count them."""
    import sqlalchemy

    if not ports:
        return 0
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            return int(con.execute(sqlalchemy.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE client_port = ANY(:ports) AND pid <> pg_backend_pid()"
            ), {"ports": ports}).scalar())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_workers_ride_out_dropped_connections(postgres_url, study_name, tmp_path):
    import sqlalchemy

    n, server_port = 8, sqlalchemy.engine.make_url(postgres_url).port or 5432
    proc = _two_workers(postgres_url, study_name, n, tmp_path)
    try:
        # Only this run's sessions: the server and everyone else's sessions stay up.
        dropped, end = 0, time.monotonic() + OUTAGE_S
        while time.monotonic() < end:
            dropped += _terminate(postgres_url, _client_ports(proc, server_port))
            time.sleep(0.2)
        code, err = _finish(proc, postgres_url)
    finally:
        kill_group(proc)
    counts = _assert_whole(postgres_url, study_name, n, code, err)
    assert dropped >= 4
    print(f"\nconnections dropped for {OUTAGE_S} s: {dropped} sessions ended; {counts}")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("STUDYHALL_OUTAGE_TESTS") == "0",
    reason="STUDYHALL_OUTAGE_TESTS=0: this machine's PostgreSQL is not to be restarted",
)
def test_two_workers_ride_out_a_postgresql_restart(postgres_url, study_name, tmp_path):
    # It hung in 2 of 13 runs (1 in 4 with two restarts at random moments) until trials that
    # never beat were judged dead: see test_a_trial_lost_before_its_first_heartbeat_... above.
    # Since then 32 runs in a row passed, half of them beside two busy processes. Set
    # STUDYHALL_OUTAGE_TESTS=0 where other people's tests share the server.
    cluster = _cluster()
    n = 8
    proc = _two_workers(postgres_url, study_name, n, tmp_path)
    try:
        stopped = subprocess.run([*cluster, "stop"], capture_output=True, text=True, timeout=60)
        if stopped.returncode != 0 and _ready():
            pytest.skip(f"cannot stop the local PostgreSQL cluster: {stopped.stderr.strip()}")
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(OUTAGE_S)
        started = subprocess.run([*cluster, "start"], capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        code, err = _finish(proc, postgres_url)
    finally:
        kill_group(proc)
        _ensure_started(cluster)
    counts = _assert_whole(postgres_url, study_name, n, code, err)
    print(f"\nPostgreSQL restart ({OUTAGE_S} s down): {counts}")
