"""The search space: one ``Param`` per hyperparameter, turned into ``trial.suggest_*`` calls.

Grid values come from the space itself: a categorical's choices, an explicit ``grid:`` list, or
an int/stepped float range small enough to enumerate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_GRID_AXIS", "Param", "grid_size", "grid_space", "suggest"]

MAX_GRID_AXIS = 10_000
"""Largest number of values an int/stepped range may enumerate into for a grid."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    Attributes:
        name: the objective parameter it sets.
        type: ``float``, ``int`` or ``categorical``.
        low, high: inclusive bounds (numbers only).
        log: sample on a log scale.
        step: discretisation step (numbers only).
        choices: the values of a categorical.
        grid: explicit values for the grid sampler (numbers only).
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    grid: tuple[Any, ...] | None = None

    def grid_values(self) -> tuple[Any, ...] | None:
        """The values a grid visits, or ``None`` if this parameter cannot be gridded."""
        if self.choices is not None:
            return self.choices
        if self.grid is not None:
            return self.grid
        assert self.low is not None and self.high is not None
        if self.log:
            return None
        if self.type == "int":
            step = int(self.step or 1)
            n = (int(self.high) - int(self.low)) // step + 1
            if n > MAX_GRID_AXIS:
                return None
            return tuple(range(int(self.low), int(self.high) + 1, step))
        if self.step is not None:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            if n <= MAX_GRID_AXIS:
                return tuple(round(self.low + i * self.step, 12) for i in range(n))
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.choices is not None:
            out["choices"] = list(self.choices)
            return out
        out.update(low=self.low, high=self.high)
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.grid is not None:
            out["grid"] = list(self.grid)
        return out

    def suggest(self, trial: Any) -> Any:
        """Ask the trial for a value (the sampler decides which)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None  # a numeric parameter's bounds
        if self.type == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.name, float(self.low), float(self.high), step=self.step, log=self.log
        )


def suggest(trial: Any, space: Sequence[Param]) -> dict[str, Any]:
    """Suggest every parameter of ``space`` for ``trial``, in order."""
    return {p.name: p.suggest(trial) for p in space}


def grid_space(space: Sequence[Param]) -> dict[str, tuple[Any, ...]] | None:
    """Param name -> grid values, or ``None`` if some parameter cannot be gridded."""
    out = {}
    for p in space:
        values = p.grid_values()
        if values is None:
            return None
        out[p.name] = values
    return out


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    """Number of points in a grid (the product of its axes)."""
    return math.prod(len(v) for v in grid.values())
