"""TPE whose cost stops growing with the study: it models at most ``max_history`` trials.

Optuna's TPE walks every trial in Python several times per suggestion: 0.56 s per trial at
10,000 trials here, growing linearly. Above a few hundred trials the model does not need them
all: TPE splits the trials into the best ``gamma(n)`` ("below") and the rest ("above") and fits
a Parzen density to each. ``BoundedTPESampler`` keeps the below group exactly (the best
``gamma(n)`` complete trials of the whole study) and a uniform random sample of the rest, so the
"above" density is an unbiased estimate from fewer points. Studies up to ``max_history``
trials are sampled exactly as by Optuna's TPE.
"""

from __future__ import annotations

import heapq
from typing import Any

from optuna.samplers import TPESampler
from optuna.trial import TrialState

__all__ = ["BoundedTPESampler"]

DEFAULT_MAX_HISTORY = 1000


class _Subset:
    """The study as TPE sees it: the same study, with fewer trials."""

    def __init__(self, study: Any, trials: list[Any]) -> None:
        self._study = study
        self._trials = trials

    def _get_trials(self, deepcopy: bool = False, states: Any = None, use_cache: bool = False
                    ) -> list[Any]:
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class BoundedTPESampler(TPESampler):
    """``TPESampler`` that models at most ``max_history`` trials (``None``: all of them)."""

    def __init__(self, *, max_history: int | None = DEFAULT_MAX_HISTORY, **kwargs: Any) -> None:
        if max_history is not None and (
            not isinstance(max_history, int) or isinstance(max_history, bool) or max_history < 100
        ):
            raise ValueError(f"max_history must be an integer >= 100 or null; got {max_history!r}")
        super().__init__(**kwargs)
        self._max_history = max_history

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        states = [TrialState.COMPLETE, TrialState.PRUNED]
        if self._constant_liar:
            states.append(TrialState.RUNNING)
        trials = study._get_trials(deepcopy=False, states=states,
                                   use_cache=not self._constant_liar)
        if (self._max_history is None or len(trials) <= self._max_history
                or len(study.directions) > 1):
            return super()._sample(study, trial, search_space)
        subset: Any = _Subset(study, self._subset(study, trials))
        return super()._sample(subset, trial, search_space)

    def _subset(self, study: Any, trials: list[Any]) -> list[Any]:
        max_history = self._max_history
        assert max_history is not None  # _sample calls this only with a bound
        gamma: Any = self._gamma
        if gamma is None:
            from optuna.samplers._tpe.sampler import default_gamma as gamma
        n_finished = sum(t.state != TrialState.RUNNING for t in trials)
        sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        n_below = min(int(gamma(n_finished)), len(complete), max_history)
        below = heapq.nsmallest(n_below, complete, key=lambda t: sign * t.value)
        kept = {t.number for t in below}
        rest = [t for t in trials if t.number not in kept]
        picks = self._rng.rng.choice(len(rest), max_history - n_below, replace=False)
        return sorted(below + [rest[i] for i in picks], key=lambda t: t.number)
