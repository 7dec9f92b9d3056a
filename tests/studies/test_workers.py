"""Workers as real processes on real storages: joining by name, crash recovery, exact budgets."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from studyhall import SpecError, StudyNotFoundError, join_study, run_study
from studyhall.cli import main
from studyhall.storage import open_storage
from tests.conftest import beale_spec
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
def storage_url(request, tmp_path, study_name):
    """Every storage a worker can share, each with a study name of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}"
        return
    url = request.getfixturevalue(
        {"postgresql": "postgres_url", "journal": "journal_url", "redis": "redis_url"}[
            request.param
        ]
    )
    yield url
    if request.param == "postgresql":
        import optuna

        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name, storage=open_storage(url))


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
    create(slow_spec(study_name, n), storage_url)
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
            lambda: running_with_steps(storage_url, study_name, 2), 60, "a trial half-way"
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


def test_eight_workers_on_one_sqlite_file_finish_200_trials_exactly(sqlite_url, study_name):
    start_s = time.perf_counter()
    handle = run_study(beale_spec(study_name, n_trials=200), storage=sqlite_url, workers=8)
    wall = time.perf_counter() - start_s
    done = handle.trials()
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    busy = (last - first).total_seconds()
    print(
        f"\n8 workers, 200 Beale trials on SQLite: {wall:.1f} s wall ({200 / wall:.1f} trials/s "
        f"with process start-up), {busy:.1f} s first to last trial ({200 / busy:.1f} trials/s)"
    )
    assert handle.state_counts() == {
        "COMPLETE": 200,
        "PRUNED": 0,
        "FAIL": 0,
        "RUNNING": 0,
        "WAITING": 0,
    }
    assert sorted(t.number for t in done) == list(range(200))


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
