"""The gRPC storage proxy: `studyhall proxy` serves a SQL storage, workers use grpc://host:port."""

from __future__ import annotations

import socket

import pytest

from studyhall import StorageError
from studyhall.cli import main
from studyhall.storage import open_storage
from tests.studies.workers import kill_group, start, states, stop, wait_for

pytest.importorskip("grpc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxy(tmp_path):
    """A `studyhall proxy` process serving a SQLite file; yields (grpc URL, SQLite URL)."""
    db = f"sqlite:///{tmp_path / 'behind.db'}"
    port = _free_port()
    proc = start("proxy", "--storage", db, "--port", str(port), cwd=tmp_path)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(port), 60, "the proxy to listen")
        assert proc.poll() is None, proc.communicate()[1]
        yield f"grpc://127.0.0.1:{port}", db
    finally:
        kill_group(proc)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_four_workers_run_a_study_through_the_proxy(proxy, tmp_path, capsys):
    url, db = proxy
    assert main(["run", "beale-tpe", "--trials", "40", "--workers", "4", "--storage", url,
                 "-q"]) == 0
    counts = states(db, "beale-tpe")
    # No lock crosses the proxy: the last admissions may overshoot by up to workers - 1.
    assert 40 <= counts["COMPLETE"] <= 43 and set(counts) == {"COMPLETE"}
    worker = start("worker", "beale-tpe", "--storage", url, "--trials", "50", "-q", cwd=tmp_path)
    code, _, err = stop(worker, 120)
    assert code == 0, err
    assert states(db, "beale-tpe")["COMPLETE"] >= 50
    assert main(["list", "--storage", url]) == 0
    assert "beale-tpe" in capsys.readouterr().out


def test_workers_through_the_proxy_beat_so_dead_trials_are_retried(proxy):
    url, _ = proxy
    storage = open_storage(url, heartbeat=None)
    assert storage.get_heartbeat_interval() is None
    from studyhall import Heartbeat

    assert open_storage(url, heartbeat=Heartbeat(1, 3)).get_heartbeat_interval() == 1


def test_a_closed_proxy_port_is_a_storage_error():
    with pytest.raises(StorageError, match="no storage proxy answered"):
        open_storage(f"grpc://127.0.0.1:{_free_port()}")


@pytest.mark.parametrize(
    "args,message",
    [
        (["proxy", "--storage", "journal://x.log"], "the gRPC proxy serves SQL storages only"),
        (["proxy", "--port", "0"], "argument --port: must be a port number"),
        (["worker", "x", "--storage", "grpc://127.0.0.1"], "must be grpc://HOST:PORT"),
    ],
)
def test_bad_proxy_input_exits_2_with_one_line(args, message, capsys, tmp_path):
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_a_second_proxy_on_a_taken_port_fails(proxy, capsys):
    port = proxy[0].rsplit(":", 1)[1]
    assert main(["proxy", "--storage", proxy[1], "--port", port]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_a_killed_worker_s_trial_is_retried_through_the_proxy(proxy, study_name, tmp_path):
    import os
    import signal

    from tests.studies.workers import create, running_with_steps, slow_spec, trials

    url, db = proxy
    # Reports reach the database 1 s apart; the victim (trial 0) lasts 8 s so that it is still
    # running when killed (see tests/studies/test_workers.py).
    create(slow_spec(study_name, 4, steps=20, first_step_s=0.4), db)
    args = ["worker", study_name, "--storage", url, "--heartbeat", "1", "--grace", "3", "-q"]
    a = start(*args, cwd=tmp_path)
    b = None
    try:
        victim = wait_for(lambda: running_with_steps(db, study_name, 2), 60, "a trial half-way",
                          proc=a)
        b = start(*args, cwd=tmp_path)
        os.kill(a.pid, signal.SIGKILL)
        code, _, err = stop(b, 120)
        assert code == 0, err
    finally:
        kill_group(a)
        if b is not None:
            kill_group(b)
    counts = states(db, study_name)
    assert counts["FAIL"] == 1 and 4 <= counts["COMPLETE"] <= 5 and len(counts) == 2
    retried = [t for t in trials(db, study_name)
               if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state.name for t in retried] == ["COMPLETE"]
