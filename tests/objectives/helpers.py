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
    """Sleeps ``step_s`` per step for ``steps`` steps, reporting each: a trial to kill halfway.

    Trial 0 sleeps ``first_step_s`` per step if given: a test that kills it once it has seen two
    of its reports (written up to a second apart) must not find it finished by then.
    """
    import time

    value = float(params["a"])
    step_s = float(params.get("step_s", 0.1))
    if trial.number == 0:
        step_s = float(params.get("first_step_s", step_s))
    for step in range(int(params.get("steps", 10))):
        time.sleep(step_s)
        trial.report(value + step, step)
    return value
