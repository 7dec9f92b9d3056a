"""Smoke tests: the benchmark command runs, with a tiny budget.

The run of every contender (Keras and KerasTuner on TensorFlow and JAX, the grid and TPE of P3,
worker processes, the 10,000-trial study's report, at toy sizes) takes 3-4 minutes of fresh
processes: it is marked ``long``, left out of the default run and run by CI after it
(``.ci/run``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_command_prints_a_table_of_contenders_and_ratios():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "p2", "--rounds", "1", "--noop-trials", "5",
         "--p2-backends", "sqlite"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| contender | median ms/trial | spread | speed vs optuna-default |" in result.stdout
    assert "| optuna-default |" in result.stdout and "| studyhall |" in result.stdout


@pytest.mark.long
def test_the_benchmark_command_runs_every_contender_with_a_tiny_budget():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "p1,p2,p3,p4,p5,p7", "--rounds", "1", "--trials", "1",
         "--epochs", "1", "--noop-trials", "5", "--p2-backends", "sqlite", "--p4-trials", "4",
         "--p5-trials", "3", "--p7-sizes", "5,20"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for contender in ("optuna-keras-fit (tensorflow)", "optuna-keras-fit (jax)",
                      "keras-tuner (tensorflow)", "studyhall (jax)", "studyhall-warm (jax)",
                      "optuna-default"):
        assert f"| {contender} |" in out
    assert "### P1:" in out and "### P2: no-op trial on sqlite" in out
    assert "### P3: TPE + median pruning" in out
    for runs in ("a process each, cold compile cache", "a process each, warm compile cache",
                 "one session (a notebook's)", "a process each, queued to a serving worker"):
        assert f"\n| {runs} |" in out
    assert "| 2 |" in out and "### P5:" in out and "no-op ms at 20" in out
    assert "| studyhall worker loop |" in out and "`studyhall report`" in out
