"""Workers as real processes on real storages: joining by name, crash recovery, exact budgets."""

from __future__ import annotations

import os
import signal
import time

import pytest

from studyhall import SpecError, StudyNotFoundError, join_study, run_study
from studyhall.cli import main
from tests.conftest import beale_spec, kill_session, storage_for
from tests.studies.workers import (
    create,
    kill_group,
    running_with_steps,
    slow_spec,
    start,
    states,
    stop,
    trials,
    wait_for,
)

BACKENDS = ["sqlite", "postgresql", "journal", "redis"]


@pytest.fixture(params=BACKENDS)
def storage_url(request, tmp_path):
    """Every storage a worker can share, each with a study name of its own."""
    return storage_for(request.param, request)


def test_a_worker_joins_by_name_and_n_trials_is_the_study_total(storage_url, study_name):
    create(beale_spec(study_name, n_trials=10), storage_url)
    handle = join_study(study_name, storage_url, n_trials=12)
    assert handle.state_counts()["COMPLETE"] == 12
    handle = join_study(study_name, storage_url)  # the stored budget (10) is already met
    assert len(handle.trials()) == 12


def test_the_worker_command_needs_only_the_name_and_the_storage(sqlite_url, study_name, capsys):
    run_study(beale_spec(study_name, n_trials=4), storage=sqlite_url)
    assert (
        main(["worker", study_name, "--storage", sqlite_url, "--trials", "9", "--threads", "1"])
        == 0
    )
    assert "trials: 9 complete" in capsys.readouterr().out


def test_a_worker_for_a_missing_sqlite_file_creates_nothing(tmp_path, study_name):
    with pytest.raises(StudyNotFoundError, match="does not exist"):
        join_study(study_name, f"sqlite:///{tmp_path / 'nope.db'}")
    assert not list(tmp_path.iterdir())


def test_a_worker_refuses_a_study_without_a_spec(sqlite_url, study_name):
    import optuna

    optuna.create_study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(SpecError, match="has no stored spec"):
        join_study(study_name, sqlite_url)


def test_an_unknown_study_names_the_close_match(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=1), storage=sqlite_url)
    with pytest.raises(StudyNotFoundError, match=f"did you mean '{study_name}'"):
        join_study(study_name + "x", sqlite_url)


def test_a_killed_worker_s_trial_fails_within_the_grace_period_and_is_retried(
    storage_url, study_name, tmp_path
):
    n, grace = 5, 3
    # 2 s trials: SQL storages write a running trial's curve at most 1 s apart (``_mirror.py``),
    # so a 0.8 s trial never showed two steps while it ran. The victim (trial 0) lasts 8 s: seen
    # at its second write, a 2 s trial had ~0.9 s left, and on a loaded CI machine it finished
    # before the kill (never FAIL: a 60 s timeout).
    create(slow_spec(study_name, n, steps=20, first_step_s=0.4), storage_url)
    args = [
        "worker",
        study_name,
        "--storage",
        storage_url,
        "--heartbeat",
        "1",
        "--grace",
        str(grace),
        "-q",
    ]
    a = start(*args, cwd=tmp_path)
    b = None
    try:
        victim = wait_for(
            lambda: running_with_steps(storage_url, study_name, 2), 60, "a trial half-way", proc=a
        )
        b = start(*args, cwd=tmp_path)
        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: any(
                t.number == victim.number and t.state.name == "FAIL"
                for t in trials(storage_url, study_name)
            ),
            60,
            "the dead trial to fail",
            proc=b,
        )
        recovery = time.monotonic() - killed
        code, _, err = stop(b, 120)
        assert code == 0, err
    finally:
        kill_group(a)
        if b is not None:
            kill_group(b)
    print(
        f"\nkill-test recovery on {storage_url.split(':')[0]}: {recovery:.1f} s (grace {grace} s)"
    )
    assert recovery < grace + 6  # the grace, plus the survivor's start-up and current trial
    assert states(storage_url, study_name) == {"COMPLETE": n, "FAIL": 1}
    everything = trials(storage_url, study_name)
    complete = [t for t in everything if t.state.name == "COMPLETE"]
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1, "the dead trial was not retried exactly once"
    assert retry[0].params == victim.params
    assert retry[0].user_attrs["seed"] == victim.user_attrs["seed"]  # the retry re-runs it exactly
    assert len({t.params["a"] for t in complete}) == n  # nothing ran twice
    failed = next(t for t in everything if t.state.name == "FAIL")
    assert len(failed.intermediate_values) >= 2  # it really died half-way


def test_a_worker_beats_from_one_thread_every_interval_not_once_a_trial(
        sqlite_url, study_name, monkeypatch):
    import threading

    import sqlalchemy

    from studyhall import Heartbeat
    from studyhall.storage._rdb import _storage_class

    started, beats = [], []
    start_thread = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start",
                        lambda self: (started.append(self.name), start_thread(self))[1])
    record = _storage_class().record_heartbeat
    monkeypatch.setattr(_storage_class(), "record_heartbeat",
                        lambda self, trial_id: (beats.append(trial_id), record(self, trial_id))[1])
    spec = slow_spec(study_name, 31, steps=2, step_s=0.005, first_step_s=1.5)  # trial 0: 3 s
    begun = time.monotonic()
    handle = run_study(spec, storage=sqlite_url, heartbeat=Heartbeat(interval=1, grace=3))
    elapsed = time.monotonic() - begun
    assert [t.state.name for t in handle.trials()] == ["COMPLETE"] * 31
    assert sorted(started) == ["studyhall-heartbeat", "studyhall-stale-watch"]  # none a trial
    assert 2 <= len(beats) <= elapsed + 1  # Optuna's: at least one a trial, 31 here
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.connect() as connection:
        beaten = connection.execute(sqlalchemy.text(
            "SELECT t.number, h.heartbeat, t.datetime_start FROM trial_heartbeats h "
            "JOIN trials t ON t.trial_id = h.trial_id WHERE t.number = 0")).all()
    engine.dispose()
    from datetime import datetime

    assert len(beaten) == 1
    beat, start = (datetime.fromisoformat(str(v)) for v in beaten[0][1:])
    assert beat > start  # the long trial, beaten while it ran


def _two_hundred_beale_trials(url: str, name: str, workers: int) -> str:
    """Run 200 Beale trials with ``workers`` processes; check the study; say how fast it went."""
    start_s = time.perf_counter()
    handle = run_study(beale_spec(name, n_trials=200), storage=url, workers=workers)
    wall = time.perf_counter() - start_s
    done = handle.trials()
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    busy = (last - first).total_seconds()
    assert handle.state_counts() == {
        "COMPLETE": 200,
        "PRUNED": 0,
        "FAIL": 0,
        "RUNNING": 0,
        "WAITING": 0,
    }
    assert sorted(t.number for t in done) == list(range(200))
    return (
        f"{workers} worker(s), 200 Beale trials on SQLite: {wall:.1f} s wall ({200 / wall:.1f} "
        f"trials/s with process start-up), {busy:.1f} s first to last trial "
        f"({200 / busy:.1f} trials/s)"
    )


@pytest.mark.slow
def test_eight_workers_on_one_sqlite_file_finish_200_trials_exactly(sqlite_url, study_name):
    print("\n" + _two_hundred_beale_trials(sqlite_url, study_name, 8))


@pytest.mark.slow
def test_one_worker_runs_the_same_200_trials_for_comparison(sqlite_url, study_name):
    print("\n" + _two_hundred_beale_trials(sqlite_url, study_name, 1))


@pytest.mark.slow
def test_eight_workers_and_a_polled_dashboard_share_one_sqlite_file(
    sqlite_url, study_name, tmp_path
):
    import json
    import socket
    import threading
    import urllib.request

    create(beale_spec(study_name, n_trials=200), sqlite_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = start("dashboard", "--storage", sqlite_url, "--port", str(port), cwd=tmp_path)
    base = f"http://127.0.0.1:{port}/api/studies"

    def get(url: str) -> dict:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def serving() -> bool:
        assert dashboard.poll() is None, dashboard.communicate()[1][-2000:]
        try:
            return bool(get(base))
        except OSError:
            return False

    polls: list[int] = []
    errors: list[str] = []
    stop_polling = threading.Event()

    def poll() -> None:  # what an open dashboard page does: re-read the study, again and again
        studies = get(base)["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == study_name)
        while not stop_polling.is_set():
            try:
                get(base)
                polls.append(len(get(f"{base}/{study_id}?after=0")["trials"]))
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        wait_for(serving, 60, "the dashboard to serve")
        poller.start()
        wait_for(lambda: polls, 30, "the dashboard's first answer")
        print("\n" + _two_hundred_beale_trials(sqlite_url, study_name, 8)
              + f", the dashboard polled {len(polls)} times meanwhile")
    finally:
        stop_polling.set()
        poller.join(30)
        kill_group(dashboard)
    _, err = dashboard.communicate()
    assert errors == []
    assert "database is locked" not in err
    assert len(polls) >= 5 and polls[-1] <= 200 and max(polls) > polls[0]  # it saw the study grow


def test_workers_started_together_never_overshoot_the_budget(sqlite_url, study_name, tmp_path):
    create(slow_spec(study_name, 3, steps=2, step_s=0.05), sqlite_url)
    procs = [
        start("worker", study_name, "--storage", sqlite_url, "-q", cwd=tmp_path) for _ in range(4)
    ]
    try:
        results = [stop(p, 120) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    assert states(sqlite_url, study_name) == {"COMPLETE": 3}


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.parametrize("rival", [True, False], ids=["rival", "no-rival"])
def test_a_worker_that_loses_its_lock_as_a_trial_starts_counts_again(
    backend, rival, request, study_name, monkeypatch
):
    """The server ends the session holding the admission lock just as the trial is created
    (a killed session, a restarted proxy); meanwhile another worker takes the last place (a
    study of 8 ended with 9 complete trials so). The worker finds out, counts again under
    the lock, and drops its trial unrun if the study is full; if not, it runs it."""
    import optuna

    from studyhall.studies import worker

    url = storage_for(backend, request)
    create(beale_spec(study_name, sampler="random", n_trials=1), url)
    real = worker.admission_lock
    armed = []

    def losing_lock(*args, **kwargs):
        lock = real(*args, **kwargs)
        release = lock.release
        if not armed:  # the worker's admission lock (the stale watch's comes second)
            armed.append(lock)

            def lose_then_release() -> bool:
                if armed and lock.conn is not None:
                    armed.clear()
                    kill_session(url, lock)
                    if rival:
                        other = optuna.load_study(study_name=study_name, storage=url)
                        other.tell(other.ask(), 1.0)
                return release()

            lock.release = lose_then_release
        return lock

    monkeypatch.setattr(worker, "admission_lock", losing_lock)
    join_study(study_name, url)
    everything = sorted(trials(url, study_name), key=lambda t: t.number)
    assert not armed, "the lock was never lost"
    if not rival:
        assert [t.state.name for t in everything] == ["COMPLETE"]
        return
    assert [t.state.name for t in everything] == ["FAIL", "COMPLETE"]
    dropped = everything[0]
    assert dropped.user_attrs["fail_reason"].startswith("one trial too many")
    assert dropped.params == {}  # dropped before anything was drawn or run


def _keras_spec(name: str, n_trials: int) -> dict:
    """Breast-cancer MLP trials of a few seconds, reporting every epoch (a Keras trial to kill).

    Two 256-unit layers: 4-5 s a trial on one thread here. 16 units took 0.8 s, shorter than
    the two workers' start-up skew on a loaded machine, so one worker could run both trials
    before the other began (1 run in 20).
    """
    return {
        "name": name,
        "objective": {"name": "breast_cancer", "epochs": 500, "batch_size": 16, "units": 256,
                      "layers": 2},
        "space": {"learning_rate": {"low": 0.001, "high": 0.01, "log": True}},
        "sampler": "random",
        "n_trials": n_trials,
        "seed": 11,
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_in_the_middle_of_a_keras_trial_loses_nothing(
    backend, request, study_name, tmp_path
):
    url = storage_for(backend, request)
    n, grace = 2, 3
    create(_keras_spec(study_name, n), url)
    args = ["worker", study_name, "--storage", url, "--heartbeat", "1", "--grace", str(grace)]
    a = start(*args, "--threads", "1", "-q", cwd=tmp_path)
    b = start(*args, "--threads", "1", "-q", cwd=tmp_path)
    try:
        # Both workers half-way through a Keras fit (epochs reported), then A dies.
        both = wait_for(
            lambda: (lambda r: r if len(r) == 2 else None)(
                [t for t in trials(url, study_name)
                 if t.state.name == "RUNNING" and len(t.intermediate_values) >= 10]
            ),
            180,
            "two Keras trials half-way",
            every=0.2,
        )
        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        a.wait()
        # A's trial is the one whose epochs stopped; B's go on (B may first wait for a journal
        # lock that A died holding).
        at_kill = {t.number: len(t.intermediate_values) for t in trials(url, study_name)}
        alive = wait_for(
            lambda: [t.number for t in trials(url, study_name)
                     if t.number in at_kill and len(t.intermediate_values) > at_kill[t.number]],
            20, "the survivor's next epoch", every=0.1,
        )
        assert len(alive) == 1, f"epochs still coming from trials {alive} after A's death"
        victim = next(t for t in both if t.number != alive[0])
        wait_for(
            lambda: any(t.number == victim.number and t.state.name == "FAIL"
                        for t in trials(url, study_name)),
            60, "the dead Keras trial to fail", every=0.1,
        )
        failed_after = time.monotonic() - killed
        code, _, err = stop(b, 180)
        done_after = time.monotonic() - killed
        assert code == 0, err
    finally:
        kill_group(a)
        kill_group(b)
    print(f"\nKeras kill test on {backend}: FAIL {failed_after:.1f} s after kill -9, study done "
          f"{done_after:.1f} s after (heartbeat 1 s, grace {grace} s"
          f"{'; B broke the journal lock A died holding' if 'Forcibly releasing' in err else ''})")
    # Failed by the survivor's stale check while it was still training: grace + one beat.
    assert failed_after < grace + 3
    assert states(url, study_name) == {"COMPLETE": n, "FAIL": 1}
    everything = trials(url, study_name)
    complete = [t for t in everything if t.state.name == "COMPLETE"]
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    assert retry[0].user_attrs["seed"] == victim.user_attrs["seed"]
    assert len(retry[0].intermediate_values) == 500  # the retry trained from the start
    assert len({t.params["learning_rate"] for t in complete}) == n  # nothing ran twice
