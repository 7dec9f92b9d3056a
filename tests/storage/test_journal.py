"""Journal storages (a log file, Redis): URLs, the same run/list/show/worker, and heartbeats."""

from __future__ import annotations

import time
import warnings

import pytest

from studyhall import StorageError, join_study, list_studies, open_study, run_study
from studyhall.cli import main
from studyhall.storage import Heartbeat, open_storage, parse_url
from studyhall.storage._journal import HEARTBEAT_ATTR, redis_options
from tests.conftest import beale_spec


@pytest.mark.parametrize(
    "given,path",
    [
        ("journal:///tmp/studies.log", "/tmp/studies.log"),
        ("journal://studies.log", "studies.log"),
        ("journal://runs/../studies.log", "runs/../studies.log"),
    ],
)
def test_journal_urls_name_an_absolute_or_relative_file(given, path, tmp_path):
    (tmp_path / "runs").mkdir()
    url = parse_url(given)
    assert (url.backend, url.path, url.is_rdb) == ("journal", path, False)


def test_redis_urls_keep_their_database_and_hide_the_password():
    url = parse_url("redis://:s3cret@127.0.0.1:6379/2")
    assert url.backend == "redis"
    assert "s3cret" not in url.masked
    full, prefix = redis_options("redis://127.0.0.1:6379/2?prefix=team-a")
    assert prefix == "team-a"
    assert full.startswith("redis://127.0.0.1:6379/2?") and "socket_timeout=10" in full


@pytest.mark.parametrize(
    "url,message",
    [
        (
            "journal:///no/such/dir/s.log",
            "journal file '/no/such/dir/s.log' from the storage URL is in a "
            "directory that does not exist (/no/such/dir)",
        ),
        ("journal://", "names no file"),
        ("redis://", "names no host"),
        ("grpc://nohost", "must be grpc://HOST:PORT"),
    ],
)
def test_a_bad_journal_or_redis_url_is_refused_before_connecting(url, message):
    with pytest.raises(StorageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_url(url)


def test_a_journal_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(StorageError, match="is a directory"):
        parse_url(f"journal://{tmp_path}")


def test_redis_on_a_closed_port_is_a_storage_error():
    with pytest.raises(StorageError, match=r"cannot use storage redis://127.0.0.1:1/0: .*refused"):
        open_storage("redis://127.0.0.1:1/0")


@pytest.mark.parametrize("backend", ["journal", "redis"])
def test_run_list_show_and_worker_work_on_journal_storages(backend, request, study_name, capsys):
    url = request.getfixturevalue(f"{backend}_url")
    assert main(["run", "beale-tpe", "--trials", "6", "--storage", url, "-q"]) == 0
    assert main(["list", "--storage", url]) == 0
    assert "beale-tpe" in capsys.readouterr().out
    assert main(["worker", "beale-tpe", "--storage", url, "--trials", "9", "-q"]) == 0
    assert main(["show", "beale-tpe", "--storage", url]) == 0
    assert "trials: 9 complete" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["journal", "redis"])
def test_two_workers_share_a_journal_study(backend, request, study_name):
    url = request.getfixturevalue(f"{backend}_url")
    handle = run_study(beale_spec(study_name, n_trials=24), storage=url, workers=2)
    assert handle.state_counts() == {
        "COMPLETE": 24,
        "PRUNED": 0,
        "FAIL": 0,
        "RUNNING": 0,
        "WAITING": 0,
    }
    assert [s.name for s in list_studies(url)] == [study_name]
    assert open_study(study_name, url).spec.n_trials == 24


def test_a_redis_prefix_keeps_journals_apart(redis_url, study_name):
    run_study(beale_spec(study_name, n_trials=2), storage=redis_url)
    other = redis_url.rsplit("prefix=", 1)[0] + "prefix=" + study_name + "-other"
    assert list_studies(other) == []


def _journal_with_trial(url: str, grace: int):
    import optuna

    storage = open_storage(url, heartbeat=Heartbeat(interval=1, grace=grace))
    study = optuna.create_study(storage=storage, study_name="hb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeats are meant for optimize": here we drive them
        return storage, study, study.ask()


def test_a_journal_trial_that_never_beat_is_dead_a_grace_period_after_it_was_first_seen(
    journal_url,
):
    storage, study, trial = _journal_with_trial(journal_url, grace=2)
    time.sleep(2.2)  # its start is older than the grace, but no clock of another machine counts
    assert storage._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.2)  # seen without a heartbeat for a whole grace period: its worker is gone
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    storage.record_heartbeat(trial._trial_id)  # it was alive after all: judged by its beats
    assert storage._get_stale_trial_ids(study._study_id) == []


def test_a_journal_trial_is_dead_once_its_last_heartbeat_is_older_than_the_grace(journal_url):
    storage, study, trial = _journal_with_trial(journal_url, grace=2)
    storage.record_heartbeat(trial._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.2)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    storage.record_heartbeat(trial._trial_id)  # alive again: not stale
    assert storage._get_stale_trial_ids(study._study_id) == []


def test_a_retried_trial_is_not_dead_because_of_its_original_s_heartbeat(journal_url):
    storage, study, trial = _journal_with_trial(journal_url, grace=2)
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 100)  # inherited
    assert storage._get_stale_trial_ids(study._study_id) == []  # it only just started


def test_a_worker_takes_a_journal_study_to_a_new_total(journal_url, study_name):
    run_study(beale_spec(study_name, n_trials=5), storage=journal_url)
    assert join_study(study_name, journal_url, n_trials=7).state_counts()["COMPLETE"] == 7
