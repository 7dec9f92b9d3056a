"""Tiny objectives for report tests: learning curves without Keras, importable by path."""

from __future__ import annotations

import optuna


def curve(trial, params):
    """A loss that falls per step towards a final value set by the parameters; pruned when the
    pruner says so (a threshold pruner cuts the bad configurations at an early step)."""
    final = params["dropout"] * 2.0 + params["batch_size"] / 32.0 + params.get("lr", 0.0)
    steps = int(params.get("steps", 5))
    for step in range(steps):
        value = final + 2.0 / (step + 1)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")
    return final


def accuracy_and_size(trial, params):
    """Two objectives shaped like "maximise accuracy, minimise parameters": a score in (0, 1]
    that is 1 at Beale's minimum (3, 0.5), and a size that grows with |x| + |y|."""
    x, y = params["x"], params["y"]
    beale = (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
    return 1.0 / (1.0 + beale), abs(x) + abs(y)
