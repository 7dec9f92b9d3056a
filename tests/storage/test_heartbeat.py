"""Heartbeat settings: defaults, environment, validation, and what each storage gets."""

from __future__ import annotations

import pytest

from studyhall import Heartbeat, SpecError
from studyhall.storage import open_storage


def test_the_defaults_are_ten_seconds_and_a_thirty_second_grace(monkeypatch):
    for var in ("STUDYHALL_HEARTBEAT", "STUDYHALL_GRACE", "STUDYHALL_MAX_RETRY"):
        monkeypatch.delenv(var, raising=False)
    assert Heartbeat.resolve() == Heartbeat(interval=10, grace=30, max_retry=3)


def test_a_grace_left_unset_is_three_heartbeats():
    assert Heartbeat.resolve(interval=2).grace == 6


def test_the_environment_sets_what_the_arguments_leave_unset(monkeypatch):
    monkeypatch.setenv("STUDYHALL_HEARTBEAT", "5")
    monkeypatch.setenv("STUDYHALL_GRACE", "40")
    monkeypatch.setenv("STUDYHALL_MAX_RETRY", "0")
    assert Heartbeat.resolve() == Heartbeat(5, 40, 0)
    assert Heartbeat.resolve(grace=20) == Heartbeat(5, 20, 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"interval": 0},
            "`heartbeat` from the arguments must be a positive whole number of seconds; got 0",
        ),
        (
            {"grace": -3},
            "`grace` from the arguments must be a positive whole number of seconds; got -3",
        ),
        (
            {"interval": 10, "grace": 10},
            r"grace period \(10 s\) must be longer than the heartbeat interval",
        ),
        ({"interval": "2.5"}, "positive whole number of seconds; got '2.5'"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(SpecError, match=message):
        Heartbeat.resolve(**kwargs)


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("STUDYHALL_GRACE", "soon")
    with pytest.raises(SpecError, match="`STUDYHALL_GRACE` from the environment"):
        Heartbeat.resolve()


def test_a_worker_s_sql_storage_beats_and_retries_dead_trials(sqlite_url):
    storage = open_storage(sqlite_url, heartbeat=Heartbeat(interval=2, grace=7, max_retry=1))
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 7)
    assert storage.get_heartbeat_stale_trial_callback()._max_retry == 1


def test_reading_storages_and_in_memory_databases_have_no_heartbeat(sqlite_url):
    assert open_storage(sqlite_url).get_heartbeat_interval() is None
    assert (
        open_storage("sqlite:///:memory:", heartbeat=Heartbeat()).get_heartbeat_interval() is None
    )


def test_a_heartbeat_that_cannot_be_written_does_not_end_the_heartbeat_thread(sqlite_url, caplog):
    import sqlite3

    storage = open_storage(sqlite_url, heartbeat=Heartbeat(interval=1, grace=3))
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as con:  # every write now fails
        con.execute("DROP TABLE trial_heartbeats")
    storage.record_heartbeat(12345)  # logged, not raised
    assert "heartbeat of trial id 12345 not recorded" in caplog.text


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_optuna_runs_no_heartbeat_of_its_own_where_the_caller_beats(backend, request):
    import threading

    from studyhall.storage.heartbeat import own_heartbeats
    from tests.conftest import storage_for

    storage = open_storage(storage_for(backend, request), heartbeat=Heartbeat(interval=2, grace=7))
    elsewhere = []
    with own_heartbeats():
        assert storage.get_heartbeat_interval() is None  # how Optuna's trial loop decides
        with own_heartbeats():
            pass
        assert storage.get_heartbeat_interval() is None
        thread = threading.Thread(target=lambda: elsewhere.append(storage.get_heartbeat_interval()))
        thread.start()
        thread.join()
    assert elsewhere == [2]  # another thread's Optuna still beats
    assert storage.get_heartbeat_interval() == 2
