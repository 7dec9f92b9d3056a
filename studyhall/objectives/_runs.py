"""Several trainings of one configuration inside one trial: repetitions and cross-validation.

A configuration trained K times (``repeats``, different seeds) or on K folds (``cv``) is judged by
the mean. The runs train side by side in threads and meet after every epoch: the main thread
reports the mean across runs of that epoch to the trial, asks the pruner once and tells every run
the answer, so a bad configuration is pruned on the mean curve, epoch by epoch, as a single run
would be. Every call on the real trial happens in the calling thread (storages need not be
thread-safe); each run sees a stand-in that forwards its reports here.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studyhall.objectives._keras import FitResult
from studyhall.objectives.registry import Hyperparameter as H

__all__ = ["HYPERPARAMETERS", "Run", "Summary", "derive_seed", "plan", "run_all", "store"]

HYPERPARAMETERS: dict[str, H] = {
    "repeats": H("int", 1, low=1, high=50,
                 help="train each configuration this many times (seeds derived from the trial's); "
                      "the value is the mean"),
    "cv": H("int", 1, low=1, high=20,
            help="stratified K-fold cross-validation inside the trial; 1: the fixed holdout"),
}
"""The options that make one trial several runs, shared by the objectives that support them."""
MAX_RUNS = 100
"""At most this many runs (repeats x folds) in one trial: each is a thread and a model."""


def derive_seed(trial_seed: int, repeat: int) -> int:
    """Repeat 0 uses the trial's own seed (``repeats: 1`` is the plain trial); the others
    derive theirs from it, so the whole trial still re-runs exactly."""
    if repeat == 0:
        return int(trial_seed)
    return int(np.random.SeedSequence([int(trial_seed), repeat]).generate_state(1)[0])


@dataclass(frozen=True, eq=False)
class Run:
    """One training of the configuration: repeat ``repeat`` on fold ``fold`` (``None``: the
    holdout), with its own seed and data."""

    repeat: int
    fold: int | None
    seed: int
    data: Any

    @property
    def label(self) -> str:
        return f"repeat {self.repeat}" + ("" if self.fold is None else f", fold {self.fold}")


def plan(trial_seed: int, repeats: int, splits: Sequence[Any], cv: bool) -> list[Run]:
    """Every (repeat, fold) pair; the folds of one repeat share its seed, as GridSearchCV
    trains one estimator with one random state on every fold.

    Raises:
        ValueError: more than ``MAX_RUNS`` runs (the trial fails and says why).
    """
    if repeats * len(splits) > MAX_RUNS:
        raise ValueError(
            f"repeats x cv = {repeats} x {len(splits)} = {repeats * len(splits)} runs in one "
            f"trial; keep it <= {MAX_RUNS}"
        )
    return [
        Run(r, f if cv else None, derive_seed(trial_seed, r), data)
        for r in range(repeats)
        for f, data in enumerate(splits)
    ]


@dataclass(frozen=True)
class Summary:
    """The runs' outcome at the best epoch of the mean curve.

    ``value`` is the mean of the runs' monitored metric at ``best_epoch``; ``values`` holds each
    run's (in ``plan`` order), ``std`` their population standard deviation (numpy's and
    GridSearchCV's ``ddof=0``); ``history`` is the mean of every logged key per epoch.
    """

    value: float
    best_epoch: int
    values: tuple[float, ...]
    std: float
    history: dict[str, list[float]]
    results: tuple[FitResult, ...] = field(repr=False, default=())


class _Aborted(Exception):
    """Tells a run to stop because another run stopped the trial."""


class _Hub:
    def __init__(self) -> None:
        self.events: queue.Queue[tuple[int, int | None, float]] = queue.Queue()
        self.cond = threading.Condition()
        self.decided: dict[int, bool] = {}
        self.aborted = False

    def wait(self, epoch: int) -> bool:
        with self.cond:
            self.cond.wait_for(lambda: epoch in self.decided or self.aborted)
            if epoch in self.decided:
                return self.decided[epoch]
            raise _Aborted

    def decide(self, epoch: int, prune: bool) -> None:
        with self.cond:
            self.decided[epoch] = prune
            self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()


class _RunTrial:
    """What one run's training sees as its trial: reports go to the hub, user attributes stay
    with the run, anything else reads the real trial."""

    def __init__(self, trial: Any, hub: _Hub, index: int) -> None:
        self._trial, self._hub, self._index = trial, hub, index
        self._epoch = -1
        self.attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        self._epoch = step
        self._hub.events.put((self._index, step, float(value)))

    def should_prune(self) -> bool:
        return self._hub.wait(self._epoch)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {**self._trial.user_attrs, **self.attrs}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def _summarise(results: Sequence[FitResult], monitor: str, maximize: bool) -> Summary:
    n_epochs = min(len(r.history[monitor]) for r in results)
    keys = [k for k in results[0].history
            if all(len(r.history.get(k, ())) >= n_epochs for r in results)]
    history = {k: [float(np.mean([r.history[k][e] for r in results])) for e in range(n_epochs)]
               for k in keys}
    curve = history[monitor]
    pick = max if maximize else min
    best = pick(range(n_epochs), key=curve.__getitem__)
    values = tuple(float(r.history[monitor][best]) for r in results)
    return Summary(value=curve[best], best_epoch=best, values=values,
                   std=float(np.std(values)), history=history, results=tuple(results))


def run_all(trial: Any, runs: Sequence[Run], train_one: Callable[[Any, Run], FitResult], *,
            monitor: str, maximize: bool) -> Summary:
    """Train every run, reporting the mean across runs per epoch to ``trial``.

    ``train_one(trial_like, run)`` trains one run, reporting each epoch to ``trial_like`` (and
    raising ``optuna.TrialPruned`` when it says so or on a NaN loss), and returns its
    ``FitResult``. One run is trained directly. Several run in threads; the first starts
    alone until its first epoch, so the others find its compiled epoch in the cache.

    Raises:
        optuna.TrialPruned: on the mean curve, or when any run's NaN guard fired (the reason,
            naming the run, is the trial's ``pruned_reason``).
    """
    if len(runs) == 1:
        return _summarise([train_one(trial, runs[0])], monitor, maximize)
    import optuna

    hub = _Hub()
    outcomes: list[Any] = [None] * len(runs)
    stand_ins = [_RunTrial(trial, hub, i) for i in range(len(runs))]

    def work(i: int) -> None:
        try:
            outcomes[i] = train_one(stand_ins[i], runs[i])
        except BaseException as exc:  # handed to the calling thread
            outcomes[i] = exc
        finally:
            hub.events.put((i, None, math.nan))

    # Each run starts in an empty context: context-scoped settings of the calling thread (the
    # artifact target: save a trial's model) stay with it, so no run saves a model on its own.
    threads = [threading.Thread(target=contextvars.Context().run, args=(work, i), daemon=True)
               for i in range(len(runs))]
    threads[0].start()
    waiting_to_start = True
    pending: dict[int, dict[int, float]] = {}
    alive = set(range(len(runs)))
    pruned_at: tuple[int, float] | None = None
    try:
        while alive:
            i, epoch, value = hub.events.get()
            if waiting_to_start:  # the first run has compiled its epoch (or stopped)
                waiting_to_start = False
                if epoch is None and isinstance(outcomes[0], BaseException):
                    alive = {0}
                else:
                    for t in threads[1:]:
                        t.start()
            if epoch is None:
                alive.discard(i)
                if isinstance(outcomes[i], BaseException) or any(
                    e not in hub.decided for e in pending
                ):
                    hub.abort()
                continue
            if len(alive) < len(runs):
                hub.abort()  # a run ended early: this epoch can never be complete
                continue
            got = pending.setdefault(epoch, {})
            got[i] = value
            if len(got) == len(runs):
                mean = float(np.mean(list(got.values())))
                trial.report(mean, epoch)
                prune = trial.should_prune()
                if prune:
                    pruned_at = (epoch, mean)
                hub.decide(epoch, prune)
    finally:
        hub.abort()
        for t in threads:
            if t.ident is not None:
                t.join()

    if pruned_at is not None:
        epoch, mean = pruned_at
        reason = f"pruned at epoch {epoch} (mean {monitor}={mean:.4g} over {len(runs)} runs)"
        trial.set_user_attr("pruned_reason", reason)
        raise optuna.TrialPruned(reason)
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, optuna.TrialPruned):
            reason = f"{stand_ins[i].attrs.get('pruned_reason', outcome)} ({runs[i].label})"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason) from None
        if isinstance(outcome, BaseException) and not isinstance(outcome, _Aborted):
            raise outcome
    if not all(isinstance(o, FitResult) for o in outcomes):
        raise RuntimeError("the runs of one trial reported different numbers of epochs")
    return _summarise(outcomes, monitor, maximize)


def store(trial: Any, summary: Summary, runs: Sequence[Run]) -> None:
    """The runs' spread as user attributes: ``std``, and per repeat and per fold the mean value
    (``repeat_values``, ``fold_values``) when there are several."""
    if len(runs) == 1:
        return
    trial.set_user_attr("n_runs", len(runs))
    trial.set_user_attr("std", summary.std)
    for key, attr in (("repeat", "repeat_values"), ("fold", "fold_values")):
        groups: dict[Any, list[float]] = {}
        for run, value in zip(runs, summary.values, strict=True):
            groups.setdefault(getattr(run, key), []).append(value)
        if len(groups) > 1:
            trial.set_user_attr(attr, [float(np.mean(v)) for _, v in sorted(groups.items())])
