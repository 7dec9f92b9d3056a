"""Where a running study stands: counted from storage, so it covers every worker."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from studyhall.storage._tally import tally_trials

__all__ = ["Progress", "poll"]

# A study's directions never change: read them once per storage object, not once per trial.
_DIRECTIONS: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Progress:
    """Where a running study stands; handed to ``on_progress`` callbacks."""

    finished: int
    budget: int | None
    complete: int
    pruned: int
    failed: int
    best_value: float | None


def _direction(storage: Any, study_id: int) -> str:
    try:
        known = _DIRECTIONS.setdefault(storage, {})
    except TypeError:  # not weakly referenceable: ask every time
        known = {}
    if study_id not in known:
        known[study_id] = storage.get_study_directions(study_id)[0].name
    return known[study_id]


def poll(storage: Any, study_id: int, budget: int | None) -> Progress:
    """The study's progress as stored now (one aggregate query on a SQL storage, whatever the
    study's size)."""
    tally = tally_trials(storage, study_id)
    c = tally.counts
    best = tally.best(_direction(storage, study_id) == "MAXIMIZE")
    return Progress(
        c["COMPLETE"] + c["PRUNED"], budget, c["COMPLETE"], c["PRUNED"], c["FAIL"], best
    )
