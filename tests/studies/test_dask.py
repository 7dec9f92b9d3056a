"""`run --dask`: the same worker loop as tasks on a real Dask cluster (a LocalCluster)."""

from __future__ import annotations

import signal
import sys

import pytest
import yaml

from studyhall.cli import main
from tests.conftest import beale_spec
from tests.studies.workers import kill_group, slow_spec, start, states, stop, trials, wait_for

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 worker processes with one thread each; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _spec_file(tmp_path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_run_on_a_dask_cluster_ends_with_exactly_its_budget(
    scheduler, sqlite_url, study_name, tmp_path
):
    spec = _spec_file(tmp_path, beale_spec(study_name, n_trials=12))
    assert main(["run", spec, "--storage", sqlite_url, "--dask", scheduler, "-q"]) == 0
    assert states(sqlite_url, study_name) == {"COMPLETE": 12}
    assert sorted(t.number for t in trials(sqlite_url, study_name)) == list(range(12))


def test_dask_tasks_run_in_parallel_on_both_workers(scheduler, sqlite_url, study_name, tmp_path):
    spec = _spec_file(tmp_path, slow_spec(study_name, 4, steps=10, step_s=0.1))
    assert main(["run", spec, "--storage", sqlite_url, "--dask", scheduler, "-q"]) == 0
    done = sorted(trials(sqlite_url, study_name), key=lambda t: t.datetime_start)
    assert [t.state.name for t in done] == ["COMPLETE"] * 4
    # Two tasks at once: the second trial started before the first ended.
    assert done[1].datetime_start < done[0].datetime_complete


@pytest.mark.slow
def test_sigterm_to_run_on_dask_fails_and_queues_the_running_trials(
    scheduler, sqlite_url, study_name, tmp_path
):
    spec = _spec_file(tmp_path, slow_spec(study_name, 3, steps=20, step_s=0.1))
    proc = start(
        "run", spec, "--storage", sqlite_url, "--dask", scheduler, "-q",
        "--heartbeat", "1", "--grace", "3", cwd=tmp_path,
    )
    try:
        wait_for(
            lambda: any(
                t.state.name == "RUNNING" and t.intermediate_values
                for t in trials(sqlite_url, study_name)
            ),
            90,
            "a running trial",
        )
        proc.send_signal(signal.SIGTERM)
        code, _, err = stop(proc, 90)
    finally:
        kill_group(proc)
    assert code == 143, err
    assert err.strip().splitlines()[-1].startswith("studyhall: interrupted by SIGTERM; ")
    counts = states(sqlite_url, study_name)
    assert "RUNNING" not in counts
    assert counts["FAIL"] == counts["WAITING"] >= 1

    again = start("worker", study_name, "--storage", sqlite_url, "-q", cwd=tmp_path)
    code, _, err = stop(again, 120)
    assert code == 0, err
    assert states(sqlite_url, study_name)["COMPLETE"] == 3
    assert "RUNNING" not in states(sqlite_url, study_name)


def test_dask_not_installed_is_one_line_and_writes_nothing(
    monkeypatch, sqlite_url, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    args = ["run", "beale-tpe", "--storage", sqlite_url, "--dask", "tcp://127.0.0.1:8786"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "studyhall: error: --dask needs dask.distributed, which is not installed; "
        "pip install 'studyhall[dask]'."
    )
    assert not list(tmp_path.iterdir())
