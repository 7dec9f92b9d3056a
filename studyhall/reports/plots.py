"""The report's figures, drawn with matplotlib's Agg canvas so they render without a display.

Each figure is its own ``Figure`` on an explicit ``FigureCanvasAgg``: no pyplot state, so a
report never switches the backend of a notebook that imports studyhall, and the same study
gives the same PNG bytes. A plot that cannot be drawn (too few trials) returns a ``Plot`` with
a note instead of a file, so the report says why it is missing.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studyhall.reports._background import Background

__all__ = [
    "Plot",
    "Ranking",
    "import_fanova",
    "importance_ranking",
    "new_figure",
    "plot_history",
    "plot_importances",
    "plot_intermediate",
    "plot_parallel",
    "plot_pareto",
    "rank_importances",
    "save",
]

_logger = logging.getLogger(__name__)

_Style = dict[str, Any]
PRUNED_STYLE: _Style = {"color": "tab:red", "linestyle": "--", "alpha": 0.8, "linewidth": 1.0}
COMPLETE_STYLE: _Style = {"color": "tab:blue", "linestyle": "-", "alpha": 0.7, "linewidth": 1.0}
OTHER_STYLE: _Style = {"color": "tab:gray", "linestyle": ":", "alpha": 0.7, "linewidth": 1.0}
IMPORTANCE_TRIALS = 200
"""Importances of a larger study are computed on this many of its complete trials."""
CURVES = 1000
"""Learning curves drawn at most (a larger study's are a uniform sample: 10,000 overlaid
curves take seconds to draw and show no more than 1,000 do)."""


@dataclass(frozen=True)
class Plot:
    """One figure of the report: its file, or the reason it was skipped."""

    key: str
    title: str
    file: Path | None = None
    note: str = ""


def new_figure(figsize: tuple[float, float] = (8.0, 4.5), ncols: int = 1) -> tuple[Any, Any]:
    """A figure on the Agg canvas (never pyplot) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=True)
    return fig, axes


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG (no timestamp metadata, so re-runs give the same bytes)."""
    fig.savefig(path, format="png", metadata={"Software": None})
    _logger.info("wrote %s", path)
    return path


def _values(trials: Sequence[Any], k: int) -> np.ndarray:
    return np.array([t.values[k] for t in trials], dtype=float)


def _maybe_log(ax: Any, values: np.ndarray) -> None:
    # Beale spans 0..1e5: a linear axis would flatten every good trial onto zero.
    finite = values[np.isfinite(values)]
    if finite.size > 1 and finite.min() > 0 and finite.max() / finite.min() > 1e3:
        ax.set_yscale("log")


def _complete(handle: Any) -> list[Any]:
    return [t for t in handle.trials(["COMPLETE"]) if t.values is not None]


def plot_history(handle: Any, path: Path) -> Plot:
    """Objective value per trial, with the best-so-far line (one panel per objective)."""
    title = "Optimization history"
    done = sorted(_complete(handle), key=lambda t: t.number)
    if not done:
        return Plot("history", title, note="no complete trial yet")
    directions = handle.directions
    width = 8.0 if len(directions) == 1 else 5.0 * len(directions)
    fig, axes = new_figure((width, 4.5), len(directions))
    numbers = np.array([t.number for t in done])
    for k, ax in enumerate(np.atleast_1d(axes)):
        values = _values(done, k)
        ax.scatter(numbers, values, s=14, color="tab:blue", label="complete trial")
        if len(directions) == 1:
            best = np.minimum.accumulate(values) if directions[0] == "minimize" \
                else np.maximum.accumulate(values)
            ax.step(numbers, best, where="post", color="tab:red", linewidth=1.8,
                    label="best so far")
            ax.legend(loc="best")
        _maybe_log(ax, values)
        ax.set_xlabel("trial")
        ax.set_ylabel(f"objective {k} ({directions[k]})" if len(directions) > 1
                      else f"value ({directions[0]})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: {handle.name}")
    return Plot("history", title, save(fig, path))


@dataclass(frozen=True)
class Ranking:
    """What the importances figure ranks: complete trials (a fixed sample of a large study's)
    with the axis' note on the sample, or ``why`` nothing can be ranked."""

    trials: list[Any]
    directions: list[Any]
    sampled: str = ""
    why: str = ""


def importance_ranking(handle: Any) -> Ranking:
    """The trials ``plot_importances`` ranks for ``handle``'s study."""
    done = _complete(handle)
    params = sorted({p for t in done for p in t.params})
    directions = list(handle.study.directions)
    if len(done) < 2:
        return Ranking([], directions, why=f"needs at least 2 complete trials; have {len(done)}")
    if len(params) < 2:
        return Ranking([], directions, why=f"needs at least 2 parameters; have {len(params)}")
    if len(done) <= IMPORTANCE_TRIALS:
        return Ranking(done, directions)
    # fANOVA's cost grows faster than the trial count (40 s at 1,000 trials here): rank on a
    # fixed uniform sample, which keeps the search space's coverage.
    sample = random.Random(0).sample(sorted(done, key=lambda t: t.number), IMPORTANCE_TRIALS)
    return Ranking(sample, directions, f", {IMPORTANCE_TRIALS} of {len(done)} trials")


def import_fanova() -> None:
    """Import what ``rank_importances`` needs (scikit-learn: 2-3 s), ahead of its call."""
    import optuna.importance  # noqa: F401


def rank_importances(trials: Sequence[Any], directions: Sequence[Any]) -> dict[str, float]:
    """fANOVA importances (seeded) of ``trials``, ranked in a study of their own in memory (so
    that a forked child can rank them without the database), most important first."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    created = logging.getLogger("optuna.storages._in_memory")  # "A new study created ..."
    level = created.level
    created.setLevel(logging.WARNING)
    try:
        study = optuna.create_study(directions=list(directions))
    finally:
        created.setLevel(level)
    study.add_trials(trials)
    target = (lambda t: t.values[0]) if len(directions) > 1 else None
    return dict(optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0), target=target))


def plot_importances(handle: Any, path: Path, ranking: Ranking | None = None,
                     job: Background | None = None) -> tuple[Plot, dict[str, float]]:
    """fANOVA parameter importances (seeded), or a note when there is too little to rank.

    ``ranking`` and ``job`` (a ``Background`` running ``rank_importances``, handed the ranking's
    trials) let a report rank in a child process while it draws the other figures; by default
    it ranks here.
    """
    title = "Parameter importances"
    ranking = ranking or importance_ranking(handle)
    if ranking.why:
        return Plot("importances", title, note=ranking.why), {}
    if job is None:
        job = Background(rank_importances, fork=False)
        job.submit(ranking.trials, ranking.directions)
    try:
        importances = job.result()
    except (RuntimeError, ValueError) as exc:  # e.g. every trial has the same value
        return Plot("importances", title, note=f"cannot rank parameters: {exc}"), {}
    if not importances:  # fANOVA ranks only parameters that every complete trial has
        return Plot("importances", title, note="no parameter is in every complete trial"), {}
    names = list(importances)[::-1]
    fig, ax = new_figure((7.0, 0.5 * len(names) + 1.8))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center", fontsize=9)
    ax.set_xlabel("importance (fANOVA, sums to 1" + ranking.sampled + ")"
                  + (", objective 0" if len(ranking.directions) > 1 else ""))
    ax.set_xlim(0, max(importances.values()) * 1.15 or 1)
    ax.set_title(f"{title}: {handle.name}")
    return Plot("importances", title, save(fig, path)), dict(importances)


def _unit(param: str, trials: Sequence[Any]) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A parameter's values scaled to [0, 1] for one parallel axis, and that axis' tick labels."""
    from optuna.distributions import CategoricalDistribution

    dist = trials[0].distributions[param]
    raw = [t.params.get(param) for t in trials]
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        scale = max(len(choices) - 1, 1)
        pos = np.array([choices.index(v) / scale if v in choices else np.nan for v in raw])
        return pos, [(i / scale, str(c)) for i, c in enumerate(choices)]
    lo, hi = float(dist.low), float(dist.high)
    f = (math.log if getattr(dist, "log", False) else float)
    span = (f(hi) - f(lo)) or 1.0
    pos = np.array([(f(v) - f(lo)) / span if v is not None else np.nan for v in raw])
    return pos, [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]


def plot_parallel(handle: Any, path: Path, params: Sequence[str]) -> Plot:
    """Parallel coordinates: one line per complete trial through its parameters to its value."""
    import matplotlib
    from matplotlib.collections import LineCollection

    title = "Parallel coordinates"
    done = [t for t in _complete(handle) if all(p in t.params for p in params)]
    if not done or not params:
        return Plot("parallel", title, note="no complete trial with parameters yet")
    values = _values(done, 0)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    columns, ticks = [], []
    for p in params:
        pos, tick = _unit(p, done)
        columns.append(pos)
        ticks.append(tick)
    columns.append((values - lo) / ((hi - lo) or 1.0))
    ticks.append([(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")])
    data = np.column_stack(columns)
    xs = np.arange(data.shape[1])
    fig, ax = new_figure((max(6.0, 1.6 * len(xs) + 2), 4.8))
    cmap = matplotlib.colormaps["viridis_r" if handle.directions[0] == "minimize" else "viridis"]
    norm = matplotlib.colors.Normalize(lo, hi)
    # Best trials drawn last, on top.
    order = np.argsort(values)[::-1] if handle.directions[0] == "minimize" else np.argsort(values)
    lines = LineCollection([np.column_stack([xs, data[i]]) for i in order], cmap=cmap, norm=norm,
                           linewidths=1.2, alpha=0.8)
    lines.set_array(values[order])
    ax.add_collection(lines)
    for x, tick in zip(xs, ticks, strict=True):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, text in tick:
            ax.text(x + 0.04, y, text, fontsize=8, va="center",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    label = "objective 0" if len(handle.directions) > 1 else "value"
    ax.set_xticks(xs, [*params, label])
    ax.set_xlim(-0.2, xs[-1] + 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    fig.colorbar(lines, ax=ax, label=f"{label} ({handle.directions[0]})")
    ax.set_title(f"{title}: {handle.name} ({len(done)} complete trials)")
    return Plot("parallel", title, save(fig, path))


def plot_intermediate(handle: Any, path: Path) -> Plot:
    """Learning curves: each trial's reported values per step; pruned trials red and dashed.

    One line collection per kind, not one line per trial (a minute for 10,000 trials), and at
    most ``CURVES`` of them, a uniform sample of a larger study's.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    title = "Intermediate values"
    curves = sorted((t for t in handle.trials() if t.intermediate_values),
                    key=lambda t: t.number)
    if not curves:
        return Plot("intermediate", title, note="no trial reported intermediate values")
    n = {"PRUNED": 0, "OTHER": 0, "COMPLETE": 0}
    for t in curves:
        n[t.state.name if t.state.name in n else "OTHER"] += 1
    drawn = curves
    if len(curves) > CURVES:
        drawn = sorted(random.Random(0).sample(curves, CURVES), key=lambda t: t.number)
    fig, ax = new_figure()
    lines: dict[str, list[np.ndarray]] = {"PRUNED": [], "OTHER": [], "COMPLETE": []}
    ends: list[tuple[float, float]] = []
    for t in drawn:
        line = np.array(sorted(t.intermediate_values.items()), dtype=float)
        line[~np.isfinite(line[:, 1]), 1] = np.nan  # a gap, as ``plot`` leaves for inf/NaN
        kind = t.state.name if t.state.name in lines else "OTHER"
        lines[kind].append(line)
        if kind == "PRUNED":
            ends.append(tuple(line[-1]))
    styles = {"COMPLETE": COMPLETE_STYLE, "PRUNED": PRUNED_STYLE, "OTHER": OTHER_STYLE}
    # Pruned first, complete on top: the survivors are what a reader looks for.
    for kind, segments in lines.items():
        if segments:
            style = styles[kind]
            ax.add_collection(LineCollection(
                segments, colors=style["color"], linestyles=style["linestyle"],
                alpha=style["alpha"], linewidths=style["linewidth"], zorder=2))
    if ends:
        ax.scatter(*zip(*ends, strict=True), marker="x", color=PRUNED_STYLE["color"], s=36,
                   linewidths=1.0, zorder=3)
    ax.autoscale_view()
    everything = np.concatenate([line[:, 1] for group in lines.values() for line in group])
    handles = [Line2D([], [], **COMPLETE_STYLE, label=f"complete ({n['COMPLETE']})"),
               Line2D([], [], **PRUNED_STYLE, marker="x", label=f"pruned ({n['PRUNED']})")]
    if n["OTHER"]:
        handles.append(Line2D([], [], **OTHER_STYLE, label=f"failed/running ({n['OTHER']})"))
    ax.legend(handles=handles, loc="best")
    _maybe_log(ax, everything)
    ax.set_xlabel("step (epoch)")
    ax.set_ylabel("intermediate value")
    ax.grid(alpha=0.3)
    sample = f" ({len(drawn)} of {len(curves)} trials drawn)" if len(drawn) < len(curves) else ""
    ax.set_title(f"{title}: {handle.name}{sample}")
    return Plot("intermediate", title, save(fig, path))


def plot_pareto(handle: Any, path: Path) -> Plot:
    """Pareto front of a multi-objective study: every complete trial, the front highlighted."""
    title = "Pareto front"
    directions = handle.directions
    if len(directions) < 2:
        return Plot("pareto", title, note="single-objective study")
    done = _complete(handle)
    if not done:
        return Plot("pareto", title, note="no complete trial yet")
    front_numbers = {t.number for t in handle.best_trials}
    front = [t for t in done if t.number in front_numbers]
    pairs = list(itertools.combinations(range(len(directions)), 2))[:6]
    fig, axes = new_figure((5.0 * len(pairs), 4.5), len(pairs))
    for ax, (a, b) in zip(np.atleast_1d(axes), pairs, strict=True):
        ax.scatter(_values(done, a), _values(done, b), s=14, color="tab:gray", alpha=0.6,
                   label=f"trials ({len(done)})")
        ordered = sorted(front, key=lambda t: t.values[a])
        ax.plot(_values(ordered, a), _values(ordered, b), "o-", color="tab:red", markersize=5,
                label=f"Pareto front ({len(front)})")
        ax.set_xlabel(f"objective {a} ({directions[a]})")
        ax.set_ylabel(f"objective {b} ({directions[b]})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(f"{title}: {handle.name}")
    return Plot("pareto", title, save(fig, path))
