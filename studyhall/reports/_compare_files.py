"""A shoot-out's files: the best-so-far figure, the table as Markdown and CSV, one row per run.

Kept apart from ``compare.py`` so running a shoot-out and drawing one stay separate concepts;
the figure uses the report's Agg canvas (headless, no pyplot state, same bytes on a re-run).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from studyhall.reports.compare import TABLE_HEADER, Comparison
from studyhall.reports.plots import new_figure, save

__all__ = ["plot_comparison", "write_comparison"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive")
_LINES = ("-", "--", "-.", ":")  # random and TPE share their start-up trials: keep both visible


def _limits(values: np.ndarray, target: float | None, maximize: bool) -> tuple[float, float]:
    """A y-range that leaves out the worst 5% of best-so-far values (the first trials' outliers),
    so the differences near the optimum stay visible."""
    lo, hi = np.quantile(values, [0.05, 1.0] if maximize else [0.0, 0.95])
    if target is not None:
        lo, hi = min(lo, target), max(hi, target)
    pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 1.0
    return float(lo - pad), float(hi + pad)


def _padded(curves: list[tuple[float, ...]]) -> np.ndarray:
    width = max(len(c) for c in curves)
    return np.array([list(c) + [math.nan] * (width - len(c)) for c in curves], dtype=float)


def plot_comparison(result: Comparison, path: Path) -> Path:
    """Best-so-far per trial (mean line, min-max band over repeats) and per second (each run)."""
    fig, (left, right) = new_figure((12.0, 4.8), 2)
    samplers = [s.sampler for s in result.summaries]
    values = np.array([v for r in result.runs for v in r.best_so_far if math.isfinite(v)])
    for i, name in enumerate(samplers):
        color = _COLORS[i % len(_COLORS)]
        runs = [r for r in result.runs if r.sampler == name and r.best_so_far]
        if not runs:
            continue
        curves = _padded([r.best_so_far for r in runs])
        x = np.arange(1, curves.shape[1] + 1)
        with warnings.catch_warnings():  # a column before any complete trial is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, low, high = (f(curves, axis=0) for f in (np.nanmean, np.nanmin, np.nanmax))
        line = _LINES[i % len(_LINES)]
        left.step(x, mean, where="post", color=color, linestyle=line, linewidth=2.0,
                  label=f"{name} (mean of {len(runs)})")
        left.fill_between(x, low, high, step="post", color=color, alpha=0.15, linewidth=0)
        for j, r in enumerate(runs):
            right.step(r.seconds, r.best_so_far, where="post", color=color, linestyle=line,
                       alpha=0.8, linewidth=1.2, label=name if j == 0 else None)
    for ax in (left, right):
        if result.target is not None:
            ax.axhline(result.target, color="black", linestyle="--", linewidth=1.0,
                       label=f"target T = {result.target:.4g}")
        if values.size > 1 and values.min() > 0 and values.max() / values.min() > 1e3:
            ax.set_yscale("log")  # Beale-like: a linear axis flattens every good run onto zero
        elif values.size > 1:
            ax.set_ylim(*_limits(values, result.target, result.direction == "maximize"))
        ax.set_ylabel(f"best value so far ({result.direction})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    left.set_xlabel("finished trials (band: min-max over repeats; y axis leaves out the worst 5%)")
    right.set_xlabel("seconds of trial time (each repeat)")
    fig.suptitle(f"Sampler shoot-out: {result.spec_name}, {result.n_trials} trials per study")
    return save(fig, path)


def _markdown(result: Comparison, png: str) -> str:
    rows = result.table()
    lines = [
        f"# Sampler shoot-out: {result.spec_name}",
        "",
        f"Storage `{result.storage}`, {result.n_trials} trials per study, direction "
        f"{result.direction}; {result.target_note}. Medians over repeats count a repeat that "
        f"missed T as infinitely slow (>{result.n_trials}: half or more missed it); seconds are "
        "summed trial durations.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "---|" * len(TABLE_HEADER),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        f"![best value so far per sampler]({png})",
        "",
        "| study | seed | trials | best | trials to T | seconds to T |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.runs:
        lines.append(
            f"| {r.study} | {r.seed} | {len(r.best_so_far)} | "
            f"{'-' if r.best is None else f'{r.best:.6g}'} | {r.trials_to_target or '-'} | "
            f"{'-' if r.seconds_to_target is None else f'{r.seconds_to_target:.1f}'} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: tuple[str, ...] | list[str], rows: list[Any]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_comparison(result: Comparison, out: Path) -> Comparison:
    """Write compare.png, compare.md, compare.csv (the table) and runs.csv; return the result
    with ``files`` filled in."""
    out.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(result, out / "compare.png")
    md = out / "compare.md"
    md.write_text(_markdown(result, png.name), encoding="utf-8")
    table = _write_csv(out / "compare.csv", TABLE_HEADER, result.table())
    runs = _write_csv(
        out / "runs.csv",
        ["sampler", "repeat", "study", "seed", "trials", "best", "trials_to_target",
         "seconds_to_target", "target"],
        [(r.sampler, r.repeat, r.study, r.seed, len(r.best_so_far), r.best, r.trials_to_target,
          r.seconds_to_target, result.target) for r in result.runs],
    )
    return dataclasses.replace(result, files={"plot": png, "markdown": md, "table": table,
                                              "runs": runs})
