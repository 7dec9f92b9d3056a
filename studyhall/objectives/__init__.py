"""What a trial computes: the objective registry and the built-in objectives."""

from __future__ import annotations

from studyhall.objectives.registry import (
    Hyperparameter,
    Objective,
    ObjectiveInfo,
    get_objective,
    objective_names,
    register_objective,
)

__all__ = [
    "Hyperparameter",
    "Objective",
    "ObjectiveInfo",
    "get_objective",
    "objective_names",
    "register_objective",
]
