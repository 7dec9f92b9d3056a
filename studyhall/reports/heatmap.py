"""The grid article's figure: mean objective over two hyperparameters, one annotated cell each.

Categorical, integer and gridded parameters get one row/column per value; continuous ones are
cut into equal-width bins (log-spaced for a log-scale parameter) over their search range, so
the cells mean the same thing however many trials a study has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studyhall.errors import SpecError

__all__ = ["Axis", "HeatmapGrid", "heatmap_grid", "plot_heatmap"]

MAX_LEVELS = 12
"""A gridded or stepped parameter with at most this many values gets one cell per value."""

DEFAULT_BINS = 5
"""Bins for a continuous parameter."""


@dataclass(frozen=True)
class Axis:
    """One side of the grid: the parameter, its cell labels and how a value finds its cell."""

    param: str
    labels: tuple[str, ...]
    levels: tuple[Any, ...] | None = None  # discrete: one cell per level
    edges: tuple[float, ...] | None = None  # binned: len(labels) + 1 edges
    log: bool = False

    @property
    def binned(self) -> bool:
        return self.edges is not None

    def index(self, value: Any) -> int | None:
        """The cell of ``value`` on this axis, or ``None`` if it falls outside."""
        if self.levels is not None:
            for i, level in enumerate(self.levels):
                if level == value or (isinstance(level, float) and isinstance(value, (int, float))
                                      and math.isclose(level, value, rel_tol=1e-9, abs_tol=1e-12)):
                    return i
            return None
        assert self.edges is not None
        lo, hi = self.edges[0], self.edges[-1]
        if not lo <= value <= hi:
            return None
        t = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo)) if self.log \
            else (value - lo) / (hi - lo) if hi > lo else 0.0
        return min(int(t * len(self.labels)), len(self.labels) - 1)


@dataclass(frozen=True)
class HeatmapGrid:
    """Mean objective per cell: ``means[i, j]`` covers ``y`` level i and ``x`` level j.

    Empty cells are NaN in ``means`` and 0 in ``counts``.
    """

    x: Axis
    y: Axis
    means: np.ndarray
    counts: np.ndarray
    objective: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.y.labels), len(self.x.labels))


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _merge(levels: Sequence[Any], seen: Sequence[Any]) -> list[Any]:
    """Sorted union of two value lists; floats equal up to rounding count once."""
    out: list[Any] = []
    for value in sorted(set(levels) | set(seen)):
        if out and isinstance(value, float) and math.isclose(value, out[-1], rel_tol=1e-9,
                                                             abs_tol=1e-12):
            continue
        out.append(value)
    return out


def _axis(param: str, trials: Sequence[Any], grid_values: Sequence[Any] | None, bins: int) -> Axis:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dist = next((t.distributions[param] for t in trials if param in t.distributions), None)
    if isinstance(dist, CategoricalDistribution):
        return Axis(param, tuple(map(_label, dist.choices)), levels=tuple(dist.choices))
    seen = sorted({t.params[param] for t in trials if param in t.params})
    levels: list[Any] | None = None
    if grid_values is not None and len(grid_values) <= MAX_LEVELS:
        levels = list(grid_values)
    elif isinstance(dist, IntDistribution) or (isinstance(dist, FloatDistribution) and dist.step):
        # Every value of a small stepped range gets a cell, seen or not, so the grid is stable.
        step = dist.step or 1
        n = int(round((dist.high - dist.low) / step)) + 1
        if n <= MAX_LEVELS and not dist.log:
            levels = [dist.low + i * step for i in range(n)]
            levels = [round(v, 12) if isinstance(v, float) else v for v in levels]
    if levels is not None:
        merged = _merge(levels, seen)
        if len(merged) <= MAX_LEVELS:
            return Axis(param, tuple(map(_label, merged)), levels=tuple(merged))
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        lo, hi, log = float(dist.low), float(dist.high), bool(dist.log)
    elif seen:
        lo, hi, log = float(seen[0]), float(seen[-1]), False
    else:
        raise SpecError(f"heatmap parameter {param!r} has no values in any trial yet.")
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    labels = tuple(f"{a:.3g}–{b:.3g}" for a, b in zip(edges[:-1], edges[1:], strict=True))
    return Axis(param, labels, edges=tuple(float(e) for e in edges), log=log)


def heatmap_grid(
    handle: Any, x: str, y: str, *, bins: int = DEFAULT_BINS, objective: int = 0
) -> HeatmapGrid:
    """Mean of objective ``objective`` over the complete trials in each (``x``, ``y``) cell.

    Raises:
        SpecError: ``x`` or ``y`` is not a parameter of the study, or they are the same.

    Example:
        >>> handle = open_study("breast-cancer-grid")  # doctest: +SKIP
        >>> heatmap_grid(handle, "batch_size", "dropout").means.shape  # doctest: +SKIP
        (3, 3)
    """
    trials = handle.trials()
    names = sorted({p for t in trials for p in t.params})
    for param in (x, y):
        if param not in names:
            raise SpecError(f"heatmap parameter {param!r} is not a parameter of study "
                            f"{handle.name}; its parameters: {', '.join(names) or 'none'}.")
    if x == y:
        raise SpecError(f"heatmap needs two different parameters; got {x!r} twice.")
    grid = None
    try:
        spec = handle.spec
        grid = {p.name: p.grid_values() for p in spec.space} if spec is not None else None
    except SpecError:
        pass
    ax_x = _axis(x, trials, (grid or {}).get(x), bins)
    ax_y = _axis(y, trials, (grid or {}).get(y), bins)
    sums = np.zeros((len(ax_y.labels), len(ax_x.labels)))
    counts = np.zeros_like(sums, dtype=int)
    for t in handle.trials(["COMPLETE"]):
        if x not in t.params or y not in t.params or t.values is None:
            continue
        value = t.values[objective]
        i, j = ax_y.index(t.params[y]), ax_x.index(t.params[x])
        if i is None or j is None or not math.isfinite(value):
            continue
        sums[i, j] += value
        counts[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return HeatmapGrid(ax_x, ax_y, means, counts, objective)


def plot_heatmap(grid: HeatmapGrid, path: Path, *, direction: str = "minimize") -> Path:
    """Draw ``grid`` as an annotated heatmap PNG (mean and trial count per cell)."""
    from studyhall.reports.plots import new_figure, save

    fig, ax = new_figure(figsize=(1.2 * len(grid.x.labels) + 3, 0.9 * len(grid.y.labels) + 2))
    import matplotlib

    cmap = matplotlib.colormaps["viridis" if direction == "maximize" else "viridis_r"]
    cmap = cmap.with_extremes(bad="#e0e0e0")
    finite = grid.means[np.isfinite(grid.means)]
    norm: Any = None
    if finite.size > 1 and finite.min() > 0 and finite.max() / finite.min() > 1e3:
        # Beale-like spreads: a linear scale would paint every good cell the same colour.
        norm = matplotlib.colors.LogNorm(finite.min(), finite.max())
    masked = np.ma.masked_invalid(grid.means)
    image = ax.imshow(masked, cmap=cmap, norm=norm, origin="lower", aspect="auto")
    ax.set_xticks(range(len(grid.x.labels)), grid.x.labels, rotation=30 if grid.x.binned else 0)
    ax.set_yticks(range(len(grid.y.labels)), grid.y.labels)
    ax.set_xlabel(grid.x.param + (" (binned)" if grid.x.binned else ""))
    ax.set_ylabel(grid.y.param + (" (binned)" if grid.y.binned else ""))
    for (i, j), mean in np.ndenumerate(grid.means):
        if not math.isfinite(mean):
            ax.text(j, i, "–", ha="center", va="center", color="#808080")
            continue
        # viridis is dark at its low end: pick the text colour that stays readable on the cell.
        frac = float(image.norm(mean))
        dark = frac < 0.5 if direction == "maximize" else frac > 0.5
        ax.text(j, i, f"{mean:.3g}\nn={grid.counts[i, j]}", ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    label = f"mean objective {grid.objective}" if grid.objective else "mean objective"
    fig.colorbar(image, ax=ax, label=f"{label} ({direction})")
    ax.set_title(f"{grid.y.param} × {grid.x.param}: mean of complete trials")
    return save(fig, path)
