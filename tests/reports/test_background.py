"""A report's slow step in a forked child answers as it would in-process, and never hangs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from studyhall.reports import _background
from studyhall.reports._background import Background


def _pid_and_total(values: list[int]) -> tuple[int, int]:
    return os.getpid(), sum(values)


def _fails(kind: str) -> None:
    raise ValueError(f"bad {kind}")


def _slow() -> None:
    time.sleep(60)


@pytest.fixture(autouse=True)
def _forks(monkeypatch):
    monkeypatch.setattr(_background, "_can_fork", lambda: True)  # even on one core


def test_the_child_answers_what_an_in_process_call_gives():
    with Background(_pid_and_total, warm=lambda: None) as job:
        job.submit(list(range(100_000)))  # far more than a pipe holds while the child warms up
        pid, total = job.result()
    assert pid != os.getpid()
    assert total == sum(range(100_000))
    here = Background(_pid_and_total, fork=False)
    here.submit([1, 2])
    assert here.result() == (os.getpid(), 3)


def test_an_exception_in_the_child_is_raised_by_result():
    with Background(_fails) as job:
        job.submit("input")
        with pytest.raises(ValueError, match="bad input"):
            job.result()


def test_a_child_that_dies_is_replaced_by_an_in_process_call():
    with Background(_pid_and_total) as job:
        os.kill(job._proc.pid, signal.SIGKILL)
        job.submit([4, 5])
        assert job.result() == (os.getpid(), 9)


def test_leaving_the_block_early_stops_the_child():
    start = time.monotonic()
    with Background(_slow) as job:
        job.submit()
        child = job._proc
    assert not child.is_alive()
    assert time.monotonic() - start < 10
    unused = Background(_slow)  # never handed arguments: ends when closed
    unused.close()
