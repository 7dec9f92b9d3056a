"""Admission locks on every storage: one holder at a time, and a lost lock owns up to it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from studyhall.storage import admission_lock, open_storage, parse_url
from tests.conftest import kill_session, storage_for


def _lock(url: str, name: str, grace: int = 30):
    return admission_lock(open_storage(url), parse_url(url), name, grace)


def _second_holder(url: str, name: str, grace: int = 30) -> tuple[threading.Event, Any]:
    """Another worker's lock on the same study, acquired (and released) in a thread."""
    got = threading.Event()
    other = _lock(url, name, grace)

    def take() -> None:
        other.acquire()
        got.set()
        other.release()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return got, thread


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql", "journal", "redis"])
def test_the_lock_keeps_a_second_worker_out_until_it_is_released(backend, request, study_name):
    url = storage_for(backend, request)
    lock = _lock(url, study_name)
    lock.acquire()
    got, thread = _second_holder(url, study_name)
    assert not got.wait(0.5), "a second worker got the lock while it was held"
    assert lock.release() is True
    assert got.wait(10)
    thread.join(10)
    assert lock.release() is True  # not held: nothing to lose


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_lock_lost_with_its_connection_says_so_on_release(backend, request, study_name):
    url = storage_for(backend, request)
    lock = _lock(url, study_name)
    lock.acquire()
    kill_session(url, lock)
    got, thread = _second_holder(url, study_name)
    assert got.wait(10), "the server kept the lock of a dead session"
    thread.join(10)
    assert lock.release() is False
    lock.acquire()  # the lock is usable again afterwards
    assert lock.release() is True


def test_an_expired_redis_lock_says_so_on_release(redis_url, study_name):
    lock = _lock(redis_url, study_name, grace=1)
    lock.acquire()
    time.sleep(1.5)  # held past its expiry (the worker stalled)
    got, thread = _second_holder(redis_url, study_name, grace=1)
    assert got.wait(10)
    thread.join(10)
    assert lock.release() is False
