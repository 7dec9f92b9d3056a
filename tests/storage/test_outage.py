"""A PostgreSQL restart under running workers: they wait it out and the study ends whole.

This test stops the real server on this machine for about five seconds, and starts it again in
a ``finally`` whatever happens. It skips where the server is not a local cluster it can control.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import yaml

from studyhall.storage import open_storage
from tests.studies.workers import kill_group, slow_spec, start, states, stop, wait_for

OUTAGE_S = 5


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


def test_two_workers_ride_out_a_postgresql_restart(postgres_url, study_name, tmp_path):
    cluster = _cluster()
    n = 8
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(slow_spec(study_name, n, steps=10, step_s=0.15)))
    proc = start(
        "run",
        str(spec),
        "--storage",
        postgres_url,
        "--workers",
        "2",
        "-q",
        "--heartbeat",
        "1",
        "--grace",
        "4",
        cwd=tmp_path,
    )
    try:
        wait_for(
            lambda: states(postgres_url, study_name).get("COMPLETE", 0) >= 2, 120, "two trials"
        )
        stopped = subprocess.run([*cluster, "stop"], capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(OUTAGE_S)
        started = subprocess.run([*cluster, "start"], capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        code, _, err = stop(proc, 300)
    finally:
        kill_group(proc)
        _ensure_started(cluster)
    try:
        counts = states(postgres_url, study_name)
        # Trials cut by the outage end FAIL and are retried; a worker may also give up cleanly
        # (the study is still whole, so `run` succeeds either way).
        assert code == 0, err
        assert counts["COMPLETE"] == n
        assert "RUNNING" not in counts and "WAITING" not in counts
        print(f"\nPostgreSQL restart ({OUTAGE_S} s down): {counts}")
    finally:
        import optuna

        optuna.delete_study(study_name=study_name, storage=open_storage(postgres_url))
