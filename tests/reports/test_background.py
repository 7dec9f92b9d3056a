"""A report's slow step in a forked child answers as it would in-process, and never hangs."""

from __future__ import annotations

import os
import signal
import sys
import time
import types

import pytest

from studyhall.reports import _background
from studyhall.reports._background import Background


def _pid_and_total(values: list[int]) -> tuple[int, int]:
    return os.getpid(), sum(values)


def _fails(kind: str) -> None:
    raise ValueError(f"bad {kind}")


def _slow() -> None:
    time.sleep(60)


# Forced to fork even on one core, and in this test process, where other tests loaded JAX
# (whose threads these children never touch; JAX warns on any fork).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(autouse=True)
def _forks(monkeypatch):
    monkeypatch.setattr(_background, "_can_fork", lambda: True)


def test_a_process_with_jax_loaded_does_not_fork(monkeypatch):
    monkeypatch.undo()
    monkeypatch.setattr(_background.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(_background.threading, "active_count", lambda: 1)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert _background._can_fork() == sys.platform.startswith("linux")
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))
    assert not _background._can_fork()


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
