"""Where a running study stands: counted from storage, so it covers every worker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "counts", "poll"]


@dataclass(frozen=True)
class Progress:
    """Where a running study stands; handed to ``on_progress`` callbacks."""

    finished: int
    budget: int | None
    complete: int
    pruned: int
    failed: int
    best_value: float | None


def counts(trials: Iterable[Any]) -> dict[str, int]:
    """Trials per finished state (COMPLETE, PRUNED, FAIL)."""
    out = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    for t in trials:
        if t.state.name in out:
            out[t.state.name] += 1
    return out


def poll(storage: Any, study_id: int, budget: int | None) -> Progress:
    """The study's progress as stored now."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    c = counts(trials)
    best = None
    direction = storage.get_study_directions(study_id)[0].name
    values = [t.values[0] for t in trials if t.state.name == "COMPLETE" and t.values]
    if values:
        best = max(values) if direction == "MAXIMIZE" else min(values)
    return Progress(
        c["COMPLETE"] + c["PRUNED"], budget, c["COMPLETE"], c["PRUNED"], c["FAIL"], best
    )
