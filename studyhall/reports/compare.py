"""A sampler shoot-out: the same objective under several samplers, each repeated with new seeds.

The source articles ask whether grid, random or guided (TPE) search finds a good configuration
sooner. One run answers nothing (a lucky seed), so each sampler runs ``repeats`` times, every
(sampler, repeat) into its own study ``<spec>.<sampler>.<repeat>`` of one storage through
``run_study``: a stopped shoot-out resumes where it stopped, and a finished one is only read.
Repeat ``r`` of every sampler shares the study seed (so the same trial seeds), which keeps the
objective's own noise out of the comparison.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studyhall.errors import SpecError
from studyhall.studies import StudySpec, load_spec, run_study
from studyhall.studies.samplers import SAMPLERS
from studyhall.studies.space import grid_size

__all__ = [
    "DEFAULT_TOLERANCE",
    "CompareProgress",
    "Comparison",
    "RepeatRun",
    "SamplerSummary",
    "TABLE_HEADER",
    "compare_samplers",
    "plan_comparison",
]

_logger = logging.getLogger(__name__)

TABLE_HEADER = ("sampler", "repeats", "reached T", "median trials to T", "median seconds to T",
                "final best (mean ± sd)", "best")
"""The columns of ``Comparison.table()``."""

DEFAULT_TOLERANCE = 0.1
"""Default target: the best value found, less this fraction of its distance to the median trial."""


@dataclass(frozen=True)
class RepeatRun:
    """One (sampler, repeat) study: its best-so-far curve and when it reached the target.

    ``best_so_far[k]`` and ``seconds[k]`` belong to the (k+1)-th finished (complete or pruned)
    trial: the best complete value so far (NaN before the first) and the summed durations of
    every trial up to it (failed ones included: their time was spent too).
    """

    sampler: str
    repeat: int
    study: str
    seed: int
    best_so_far: tuple[float, ...]
    seconds: tuple[float, ...]
    trials_to_target: int | None
    seconds_to_target: float | None

    @property
    def best(self) -> float | None:
        finite = [v for v in self.best_so_far if math.isfinite(v)]
        return finite[-1] if finite else None


@dataclass(frozen=True)
class SamplerSummary:
    """One row of the table: how one sampler did over its repeats.

    The medians count a repeat that never reached the target as infinitely slow, so they are
    ``None`` when half or more of the repeats missed it (rather than a median of the lucky ones);
    the table shows that as ``>N`` trials.
    """

    sampler: str
    repeats: int
    reached: int
    median_trials: float | None
    median_seconds: float | None
    mean_best: float | None
    std_best: float | None
    best: float | None


@dataclass(frozen=True)
class CompareProgress:
    """Handed to ``on_progress``: finished trials over the whole shoot-out."""

    done: int
    total: int
    study: str
    best: float | None


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_samplers`; ``files`` lists what was written (key -> path)."""

    spec_name: str
    storage: str
    direction: str
    n_trials: int
    target: float | None
    target_note: str
    runs: tuple[RepeatRun, ...]
    summaries: tuple[SamplerSummary, ...]
    elapsed_s: float
    files: Mapping[str, Path]

    def table(self) -> list[tuple[str, ...]]:
        """The summary table's rows (strings), in the order of ``TABLE_HEADER``."""
        rows: list[tuple[str, ...]] = []
        for s in self.summaries:
            spread = "-" if s.mean_best is None else f"{s.mean_best:.4g} ± {s.std_best or 0:.2g}"
            rows.append((
                s.sampler, str(s.repeats), f"{s.reached}/{s.repeats}",
                _num(s.median_trials, "{:g}", f">{self.n_trials}"),
                _num(s.median_seconds, "{:.1f}", "-"),
                spread, _num(s.best, "{:.6g}", "-"),
            ))
        return rows


def _num(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None else spec.format(value)


def _samplers(samplers: str | Sequence[str]) -> tuple[str, ...]:
    names = [s.strip() for s in samplers.split(",")] if isinstance(samplers, str) \
        else [str(s).strip() for s in samplers]
    if not names or not all(names):
        raise SpecError(f"`samplers` must be a comma-separated list of {', '.join(SAMPLERS)}; "
                        f"got {','.join(names)!r}.")
    for name in names:
        if name not in SAMPLERS:
            close = difflib.get_close_matches(name, SAMPLERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"unknown sampler {name!r} in `samplers`{hint}; allowed: "
                            f"{', '.join(SAMPLERS)}.")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"`samplers` names {dup[0]!r} twice; give each sampler once.")
    return tuple(names)


def plan_comparison(
    spec: StudySpec | str | Mapping[str, Any],
    samplers: str | Sequence[str] = ("grid", "random", "tpe"),
    repeats: int = 5,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
) -> list[tuple[str, int, StudySpec]]:
    """Validate a shoot-out and return its studies as (sampler, repeat, spec), nothing written.

    Each spec is the given one with its name ``<name>.<sampler>.<repeat>``, that sampler (with
    the spec's own options when it names the same sampler), seed ``spec.seed + repeat - 1`` and
    the same trial budget (a grid stops early when its points run out).

    Raises:
        SpecError: a bad spec, an unknown or repeated sampler, ``repeats`` < 1, a grid over a
            space that cannot be gridded, a multi-objective spec, or no trial budget.
    """
    base = load_spec(spec, overrides={"storage": storage, "n_trials": n_trials},
                     overrides_from="the arguments")
    names = _samplers(samplers)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise SpecError(f"`repeats` must be a positive integer; got {repeats!r}.")
    if len(base.directions) != 1:
        raise SpecError(f"a shoot-out needs one objective; {base.source} has directions "
                        f"{', '.join(base.directions)}.")
    budget = base.n_trials
    if budget is None and base.grid is not None:
        budget = grid_size(base.grid)
    if budget is None:
        raise SpecError(f"{base.source} sets no `n_trials` and cannot be gridded; give the trials "
                        "per study (--trials N).")
    plan = []
    for repeat in range(1, repeats + 1):
        for name in names:
            raw = base.to_dict()
            raw.update(name=f"{base.name}.{name}.{repeat}", n_trials=budget,
                       seed=(base.seed or 0) + repeat - 1,
                       sampler=base.sampler.to_dict() if base.sampler.name == name else name)
            try:
                plan.append((name, repeat, load_spec(raw, source=base.source)))
            except SpecError as exc:
                raise SpecError(f"sampler {name!r} cannot run this spec: {exc}") from None
    return plan


def _target(values: Sequence[float], maximize: bool, tolerance: float) -> tuple[float | None, str]:
    if not values:
        return None, "no complete trial, so no target"
    best = max(values) if maximize else min(values)
    median = float(np.median(values))
    target = best - tolerance * (best - median)
    return target, (f"T = {target:.6g}: the best value any sampler found ({best:.6g}) moved "
                    f"{tolerance:.0%} of the way to the median trial ({median:.6g})")


def _curve(handle: Any, maximize: bool) -> tuple[list[float], list[float], list[float]]:
    """Best-so-far and cumulative seconds per finished trial, and every complete value."""
    best: list[float] = []
    seconds: list[float] = []
    values: list[float] = []
    current, spent = math.nan, 0.0
    for t in sorted(handle.trials(), key=lambda t: t.number):
        if t.duration is not None:
            spent += t.duration.total_seconds()
        if t.state.name == "COMPLETE" and t.values:
            v = float(t.values[0])
            values.append(v)
            if math.isnan(current) or (v > current if maximize else v < current):
                current = v
        if t.state.name in ("COMPLETE", "PRUNED"):
            best.append(current)
            seconds.append(spent)
    return best, seconds, values


def _reach(best: Sequence[float], target: float | None, maximize: bool) -> int | None:
    if target is None:
        return None
    for k, v in enumerate(best):
        if math.isfinite(v) and (v >= target if maximize else v <= target):
            return k + 1
    return None


def _median(values: Sequence[float | None]) -> float | None:
    m = float(np.median([math.inf if v is None else v for v in values]))
    return m if math.isfinite(m) else None


def _summaries(names: Sequence[str], runs: Sequence[RepeatRun],
               maximize: bool) -> tuple[SamplerSummary, ...]:
    out = []
    for name in names:
        mine = [r for r in runs if r.sampler == name]
        finals = [r.best for r in mine if r.best is not None]
        out.append(SamplerSummary(
            sampler=name, repeats=len(mine),
            reached=sum(r.trials_to_target is not None for r in mine),
            median_trials=_median([r.trials_to_target for r in mine]),
            median_seconds=_median([r.seconds_to_target for r in mine]),
            mean_best=float(np.mean(finals)) if finals else None,
            std_best=float(np.std(finals)) if finals else None,
            best=(max(finals) if maximize else min(finals)) if finals else None,
        ))
    return tuple(out)


def compare_samplers(
    spec: StudySpec | str | Mapping[str, Any],
    samplers: str | Sequence[str] = ("grid", "random", "tpe"),
    repeats: int = 5,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    target: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    out: str | Path | None = None,
    on_progress: Callable[[CompareProgress], None] | None = None,
) -> Comparison:
    """Run (or resume) a sampler shoot-out and summarise it; write its files into ``out``.

    Args:
        spec: the study to repeat (a ``StudySpec``, YAML path, preset name or dict).
        samplers: sampler names, a sequence or ``"grid,random,tpe"``.
        repeats: studies per sampler, each with its own seed.
        n_trials: finished trials per study (default: the spec's, or the grid's size).
        storage: storage URL for every study (default: the spec's).
        target: the value to reach (default: see ``tolerance``; the result says which).
        tolerance: for the default target, the best value found by any sampler moved this
            fraction of the way to the median complete trial.
        out: directory for ``compare.png``, ``compare.md``, ``compare.csv`` and ``runs.csv``
            (``None``: write no files).
        on_progress: called after each finished trial.

    Raises:
        SpecError: bad input (see :func:`plan_comparison`; also a non-finite target, a tolerance
            outside [0, 1], or ``out`` naming a file); raised before anything is written.

    Example:
        >>> result = compare_samplers("beale-tpe", "random,tpe", 3, n_trials=20,
        ...                           storage="sqlite:///shootout.db")  # doctest: +SKIP
        >>> [(s.sampler, s.median_trials) for s in result.summaries]  # doctest: +SKIP
    """
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                               or not math.isfinite(target)):
        raise SpecError(f"`target` must be a finite number; got {target!r}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 <= tolerance <= 1:
        raise SpecError(f"`tolerance` must be a number in [0, 1]; got {tolerance!r}.")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise SpecError(f"`out` must be a directory; got {str(out)!r}, which is a file.")
    plan = plan_comparison(spec, samplers, repeats, n_trials=n_trials, storage=storage)
    names = list(dict.fromkeys(name for name, _, _ in plan))
    first = plan[0][2]
    maximize = first.directions[0] == "maximize"
    total = sum(s.budget or 0 for _, _, s in plan)
    started = time.perf_counter()
    done = 0
    handles = []
    for i, (name, repeat, study_spec) in enumerate(plan, 1):
        _logger.info("shoot-out study %d of %d: %s", i, len(plan), study_spec.name)

        def progress(p: Any, _before: int = done, _name: str = study_spec.name) -> None:
            if on_progress is not None:
                on_progress(CompareProgress(_before + min(p.finished, p.budget or p.finished),
                                            total, _name, p.best_value))

        handle = run_study(study_spec, on_progress=progress)
        counts = handle.state_counts()
        finished = counts["COMPLETE"] + counts["PRUNED"]
        done += min(finished, study_spec.budget or finished)
        if on_progress is not None:
            best = handle.top_trials(1)
            on_progress(CompareProgress(done, total, study_spec.name,
                                        best[0].values[0] if best else None))
        handles.append((name, repeat, study_spec, handle))

    curves, values = [], []
    for name, repeat, study_spec, handle in handles:
        best, seconds, vals = _curve(handle, maximize)
        curves.append((name, repeat, study_spec, best, seconds))
        values.extend(vals)
    if target is None:
        target, note = _target(values, maximize, tolerance)
    else:
        note = f"T = {target:.6g}: given"
    runs = []
    for name, repeat, study_spec, best, seconds in curves:
        k = _reach(best, target, maximize)
        runs.append(RepeatRun(name, repeat, study_spec.name, study_spec.seed or 0, tuple(best),
                              tuple(seconds), k, seconds[k - 1] if k else None))
    result = Comparison(
        spec_name=first.name.rsplit(".", 2)[0],
        storage=handles[0][3].url.masked, direction=first.directions[0],
        n_trials=first.n_trials or 0, target=target, target_note=note, runs=tuple(runs),
        summaries=_summaries(names, runs, maximize), elapsed_s=time.perf_counter() - started,
        files={},
    )
    if out is not None:
        from studyhall.reports._compare_files import write_comparison

        result = write_comparison(result, Path(out))
    return result
