"""Helpers for tests that start real worker processes and watch a study in storage."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from studyhall.storage import open_storage, parse_url
from studyhall.studies.runner import _prepare
from studyhall.studies.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SLOW = "tests.objectives.helpers:slow_steps"


def slow_spec(name: str, n_trials: int, steps: int = 8, step_s: float = 0.1,
              first_step_s: float | None = None) -> dict:
    """A random-sampler study whose trials take ``steps * step_s`` seconds, reporting each step
    (trial 0 ``steps * first_step_s``, if given)."""
    objective: dict = {"name": SLOW, "steps": steps, "step_s": step_s}
    if first_step_s is not None:
        objective["first_step_s"] = first_step_s
    return {
        "name": name,
        "objective": objective,
        "space": {"a": {"low": 0.0, "high": 1.0}},
        "sampler": "random",
        "n_trials": n_trials,
        "seed": 3,
    }


def create(spec: dict, url: str) -> None:
    """Create the study and store its spec, running no trial (what `run` does first)."""
    _prepare(load_spec(spec), open_storage(url), parse_url(url))


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m studyhall ARGS`` in the background, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "studyhall", *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def trials(url: str, name: str) -> list:
    """The study's trials ([] while it does not exist yet)."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def states(url: str, name: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials(url, name):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def wait_for(predicate, timeout: float, what: str, every: float = 0.1,
             proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``,
    or as soon as ``proc`` (the process that should make it true) has ended, with its stderr
    (on a timeout ``proc``'s group is killed first, so that its stderr can be read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(
                f"the process ended (exit code {proc.returncode}) before {what}: {err[-3000:]}"
            )
        time.sleep(every)
    detail = ""
    if proc is not None:  # still running: what it said so far helps more than the timeout
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        detail = f"; the process's stderr: {err[-3000:]}"
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def running_with_steps(url: str, name: str, steps: int):
    """A RUNNING trial that has reported at least ``steps`` intermediate values, or None.

    ``steps=0``: one whose objective has started (its parameters are written just before).
    Reports reach the database up to ``CURVE_FLUSH_S`` apart, the first one too, so a trial
    shorter than ~2 s may be over before its steps are seen.
    """
    for t in trials(url, name):
        if t.state.name == "RUNNING" and t.params and len(t.intermediate_values) >= steps:
            return t
    return None


def stop(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for ``proc`` (killing its group if it overruns); return code, stdout, stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"process did not end in {timeout} s: {err[-2000:]}") from None
    return proc.returncode, out, err


def kill_group(proc: subprocess.Popen) -> None:
    """Make sure nothing a test started outlives it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
