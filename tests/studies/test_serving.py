"""Serving workers: studies queued with ``workers=0`` run in a worker that stays up."""

from __future__ import annotations

import os
import signal

import pytest

from studyhall import QueuedStudy, SpecError, run_study, serve_studies
from studyhall.cli import main
from studyhall.studies.worker import MAX_FAILURE_STREAK
from tests.conftest import beale_spec, storage_for
from tests.studies.workers import (
    kill_group,
    running_with_steps,
    slow_spec,
    start,
    states,
    stop,
    trials,
    wait_for,
)

BROKEN = "tests.objectives.helpers:always_fails"


def _queue(spec: dict, url: str) -> None:
    run_study(spec, storage=url, workers=0)


def test_a_queued_study_is_stored_with_no_trial_and_served_oldest_first(sqlite_url):
    _queue(beale_spec("first", n_trials=8), sqlite_url)
    _queue(beale_spec("second", n_trials=5), sqlite_url)
    assert trials(sqlite_url, "first") == [] and trials(sqlite_url, "second") == []
    events: list[tuple[str, int | None]] = []
    seen: list[tuple[str, int]] = []

    def on_study(queued: QueuedStudy, progress) -> None:
        events.append((queued.name, None if progress is None else progress.finished))

    def on_progress(queued: QueuedStudy, progress) -> None:
        seen.append((queued.name, progress.finished))

    assert serve_studies(sqlite_url, idle_exit=0.3, poll_s=0.05, on_study=on_study,
                         on_progress=on_progress) == 2
    assert events == [("first", None), ("first", 8), ("second", None), ("second", 5)]
    assert seen == [("first", n) for n in range(1, 9)] + [("second", n) for n in range(1, 6)]
    assert states(sqlite_url, "first") == {"COMPLETE": 8}
    assert states(sqlite_url, "second") == {"COMPLETE": 5}


def test_a_study_served_with_index_0_draws_what_run_draws(sqlite_url):
    run_study(beale_spec("ran", n_trials=15), storage=sqlite_url)
    _queue(beale_spec("served", n_trials=15), sqlite_url)
    serve_studies(sqlite_url, idle_exit=0.2, poll_s=0.05, index=0)
    ran, served = trials(sqlite_url, "ran"), trials(sqlite_url, "served")
    assert [t.params for t in served] == [t.params for t in ran]
    assert len({t.params["x"] for t in ran}) == 15


def test_queueing_more_trials_serves_only_the_new_ones(sqlite_url):
    _queue(beale_spec("grows", n_trials=4), sqlite_url)
    serve_studies(sqlite_url, idle_exit=0.2, poll_s=0.05)
    _queue(beale_spec("grows", n_trials=7), sqlite_url)
    assert serve_studies(sqlite_url, idle_exit=0.2, poll_s=0.05) == 1
    assert states(sqlite_url, "grows") == {"COMPLETE": 7}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage": "sqlite:///:memory:"}, "is seen by no serving worker"),
        ({"n_trials": None, "timeout": 5.0}, "has no trial budget"),
        ({"dask": "tcp://127.0.0.1:1"}, "it takes no `dask`"),
        ({"workers": -1}, "`workers` must be a whole number of processes; got -1"),
    ],
)
def test_a_study_no_serving_worker_could_take_is_refused_before_anything_is_written(
    tmp_path, kwargs, message
):
    spec = beale_spec("refused", n_trials=kwargs.pop("n_trials", 5))
    kwargs.setdefault("storage", f"sqlite:///{tmp_path}/q.db")
    with pytest.raises(SpecError, match=message):
        run_study(spec, **{"workers": 0, **kwargs})
    assert not (tmp_path / "q.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_s": 0}, "`poll_s` must be a positive number of seconds; got 0"),
        ({"idle_exit": -1}, "`idle_exit` must be a positive number of seconds; got -1"),
        ({"threads": 0}, "`threads` must be a positive integer; got 0"),
        ({"index": -1}, "`index` must be an integer >= 0; got -1"),
        ({"storage": "sqlite:///:memory:"}, "cannot serve an in-memory SQLite database"),
    ],
)
def test_serve_refuses_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        serve_studies(**{"storage": "sqlite:///q.db", **kwargs})


def test_a_study_whose_trials_keep_failing_is_passed_over_and_the_queue_goes_on(sqlite_url):
    broken = {**slow_spec("broken", 30), "objective": BROKEN}
    _queue(broken, sqlite_url)
    _queue(beale_spec("fine", n_trials=5), sqlite_url)
    # Served once (it stops after a streak of failures), then passed over: not served again.
    assert serve_studies(sqlite_url, idle_exit=0.5, poll_s=0.05) == 2
    assert states(sqlite_url, "broken") == {"FAIL": MAX_FAILURE_STREAK}
    assert states(sqlite_url, "fine") == {"COMPLETE": 5}
    # Queued again (a new spec): served again.
    _queue({**broken, "n_trials": 31}, sqlite_url)
    assert serve_studies(sqlite_url, idle_exit=0.3, poll_s=0.05) == 1
    assert states(sqlite_url, "broken") == {"FAIL": 2 * MAX_FAILURE_STREAK}


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request):
    return storage_for(request.param, request)


def test_two_serving_processes_share_a_queue_and_every_study_ends_at_its_budget(
    shared_url, study_name, tmp_path
):
    names = [f"{study_name}-{i}" for i in range(3)]
    for name in names:
        assert main(["run", "--workers", "0", "--storage", shared_url, "-q",
                     _spec_file(tmp_path, slow_spec(name, 6, steps=2, step_s=0.05))]) == 0
    procs = [start("serve", "--storage", shared_url, "--idle-exit", "2", "--poll", "0.05",
                   cwd=tmp_path) for _ in range(2)]
    try:
        outs = [stop(p, timeout=120) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    for code, out, err in outs:
        assert code == 0, err[-2000:]
        assert out.startswith("serving the studies queued in ")
        if "running it" in out:  # a progress bar for the studies it ran, on stderr
            assert "/6 [" in err, err[-2000:]
    for name in names:
        assert states(shared_url, name) == {"COMPLETE": 6}
    said = "".join(out for _, out, _ in outs)
    assert all(f"study {name}: 6 of 6 trials finished" in said for name in names)


def test_sigterm_stops_a_serving_worker_and_the_next_one_finishes_the_study(
    sqlite_url, study_name, tmp_path
):
    main(["run", "--workers", "0", "--storage", sqlite_url, "-q",
          _spec_file(tmp_path, slow_spec(study_name, 4, steps=20, step_s=0.1))])
    proc = start("serve", "--storage", sqlite_url, cwd=tmp_path)
    try:
        wait_for(lambda: running_with_steps(sqlite_url, study_name, 2), 60,
                 "a served trial to report", proc=proc)
        os.killpg(proc.pid, signal.SIGTERM)
        code, _, err = stop(proc)
    finally:
        kill_group(proc)
    assert code == 143, err[-2000:]
    assert states(sqlite_url, study_name).get("RUNNING", 0) == 0  # failed and queued again
    assert serve_studies(sqlite_url, idle_exit=0.3, poll_s=0.05) == 1
    assert states(sqlite_url, study_name)["COMPLETE"] == 4


def test_run_with_no_workers_says_where_the_study_was_queued(sqlite_url, tmp_path, capsys):
    assert main(["run", "beale-tpe", "--workers", "0", "--trials", "3",
                 "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert out == (f"queued study beale-tpe in {sqlite_url}: 0 of 3 trials finished; "
                   f"`studyhall serve --storage {sqlite_url}` runs it\n")
    assert trials(sqlite_url, "beale-tpe") == []
    assert main(["run", "beale-tpe", "--workers", "0", "--storage", sqlite_url, "-q"]) == 0
    assert capsys.readouterr().out == ""


def _spec_file(tmp_path, spec: dict) -> str:
    import yaml

    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_study_deleted_while_it_is_served_leaves_the_worker_serving_the_queue(sqlite_url):
    import threading

    from studyhall.reports.records import delete_study

    _queue(slow_spec("doomed", 50, steps=10, step_s=0.05), sqlite_url)
    _queue(beale_spec("after", n_trials=3), sqlite_url)
    result: list[int] = []
    server = threading.Thread(
        target=lambda: result.append(serve_studies(sqlite_url, idle_exit=0.5, poll_s=0.05)))
    server.start()
    try:
        wait_for(lambda: running_with_steps(sqlite_url, "doomed", 1), 60, "a served trial")
        delete_study("doomed", sqlite_url)
    finally:
        server.join(timeout=120)
    assert result == [2]
    assert trials(sqlite_url, "doomed") == []
    assert states(sqlite_url, "after") == {"COMPLETE": 3}
