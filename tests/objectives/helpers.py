"""Objectives for tests, importable by ``module:function`` path from worker processes too."""

from __future__ import annotations

import math


def two_values(trial, params):
    return float(params["a"]), float(params["a"]) ** 2


def fails_on_odd(trial, params):
    if trial.number % 2:
        raise RuntimeError(f"odd trial {trial.number}")
    return float(params["a"])


def returns_nan(trial, params):
    return math.nan


def always_fails(trial, params):
    raise ValueError("this objective is broken")


def slow_steps(trial, params):
    """Sleeps ``step_s`` per step for ``steps`` steps, reporting each: a trial to kill halfway."""
    import time

    value = float(params["a"])
    for step in range(int(params.get("steps", 10))):
        time.sleep(float(params.get("step_s", 0.1)))
        trial.report(value + step, step)
    return value
