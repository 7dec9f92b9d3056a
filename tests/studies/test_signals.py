"""Ctrl-C and SIGTERM: the running trial ends FAIL (and queued again), the next run resumes."""

from __future__ import annotations

import os
import signal

import pytest
import yaml

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

FAST_BEAT = ["--heartbeat", "1", "--grace", "3"]


def _running(url: str, name: str, n: int) -> bool:
    return (
        sum(
            t.state.name == "RUNNING" and len(t.intermediate_values) >= 1 for t in trials(url, name)
        )
        >= n
    )


def _spec_file(tmp_path, name: str, n: int) -> str:
    path = tmp_path / f"{name}.yaml"
    # Trial 0 lasts 8 s, the others 2 s: the signal must find it still running however late
    # the test sees it start (the other worker's start-up, a loaded machine).
    path.write_text(yaml.safe_dump(slow_spec(name, n, steps=20, step_s=0.1, first_step_s=0.4)))
    return str(path)


def test_sigterm_to_run_fails_the_trial_queues_it_and_the_next_worker_resumes(
    sqlite_url, study_name, tmp_path
):
    proc = start(
        "run",
        _spec_file(tmp_path, study_name, 3),
        "--storage",
        sqlite_url,
        "-q",
        *FAST_BEAT,
        cwd=tmp_path,
    )
    try:
        victim = wait_for(
            lambda: running_with_steps(sqlite_url, study_name, 0), 60, "a running trial", proc=proc
        )
        proc.send_signal(signal.SIGTERM)
        code, _, err = stop(proc, 30)
    finally:
        kill_group(proc)
    lines = err.strip().splitlines()
    assert code == 143, err
    assert lines == [
        f"studyhall: interrupted by SIGTERM; trial {victim.number} marked FAIL and "
        "queued again; run the same command to resume"
    ]
    assert states(sqlite_url, study_name) == {"FAIL": 1, "WAITING": 1}
    failed = next(t for t in trials(sqlite_url, study_name) if t.state.name == "FAIL")
    assert failed.user_attrs["fail_reason"] == "interrupted by SIGTERM"

    resume = start("worker", study_name, "--storage", sqlite_url, "-q", cwd=tmp_path)
    code, _, err = stop(resume, 120)
    assert code == 0, err
    assert states(sqlite_url, study_name) == {"COMPLETE": 3, "FAIL": 1}
    retried = [
        t
        for t in trials(sqlite_url, study_name)
        if t.system_attrs.get("failed_trial") == victim.number
    ]
    assert [t.state.name for t in retried] == ["COMPLETE"]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_run_with_two_workers_stops_both_and_leaves_nothing_running(
    signum, code, sqlite_url, study_name, tmp_path
):
    spec = _spec_file(tmp_path, study_name, 4)
    proc = start(
        "run", spec, "--storage", sqlite_url, "--workers", "2", "-q", *FAST_BEAT, cwd=tmp_path
    )
    try:
        wait_for(lambda: _running(sqlite_url, study_name, 2), 90, "both workers in a trial",
                 proc=proc)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # a terminal's Ctrl-C reaches the whole group
        else:
            proc.send_signal(signum)  # the parent alone: it forwards to its workers
        got, _, err = stop(proc, 60)
    finally:
        kill_group(proc)
    assert got == code, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"studyhall: interrupted by {signal.Signals(signum).name}")
    )
    counts = states(sqlite_url, study_name)
    assert "RUNNING" not in counts
    assert counts["FAIL"] == 2 and counts["WAITING"] == 2

    again = start("run", spec, "--storage", sqlite_url, "--workers", "2", "-q", cwd=tmp_path)
    got, _, err = stop(again, 120)
    assert got == 0, err
    assert states(sqlite_url, study_name) == {"COMPLETE": 4, "FAIL": 2}


def test_ctrl_c_to_a_worker_exits_130_with_one_line(sqlite_url, study_name, tmp_path):
    create(slow_spec(study_name, 2, steps=20, first_step_s=0.4), sqlite_url)
    proc = start("worker", study_name, "--storage", sqlite_url, "-q", cwd=tmp_path)
    try:
        victim = wait_for(lambda: running_with_steps(sqlite_url, study_name, 0), 60,
                          "a running trial", proc=proc)
        proc.send_signal(signal.SIGINT)
        code, _, err = stop(proc, 30)
    finally:
        kill_group(proc)
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1
    assert f"interrupted by SIGINT; trial {victim.number} marked FAIL and queued again" in err
    assert states(sqlite_url, study_name) == {"FAIL": 1, "WAITING": 1}
