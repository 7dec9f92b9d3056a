"""Optuna's trial cache, which skips its sync when a question needs none.

Before every new trial ``Study.ask`` looks for a WAITING trial to run (a retry, an enqueued
configuration) by asking the cache for the study's WAITING trials. The cache answers any
question by first reading everything new in the study: every trial another worker finished
since the last question and every one still running, whole (params, attributes, 30 reports a
breast-cancer trial). With two workers and a sampler that reads no history (random, no
pruner) that read was a tenth of each trial (py-spy, 648 trials: 2.5 ms of a ~25 ms trial,
against 0.3 ms for one worker, which has no one else's trials to read). The tally
(``_tally.py``) already knows how many trials wait, from one light query over what is new
since the worker's admission counted them a moment before; when none waits, the answer is
empty and the sync waits for a question that needs it (a sampler's, a pruner's).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from studyhall.storage._tally import tally_trials

__all__ = ["trial_cache"]


class _TrialCache(_CachedStorage):
    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[Any]:
        if states == (TrialState.WAITING,) and not tally_trials(
                self._backend, study_id).counts["WAITING"]:
            return []
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


def trial_cache(storage: Any) -> Any:
    """``storage`` as ``optuna.load_study`` would wrap it, with the shortcut above (a SQL
    storage; any other is handed back as it is, as Optuna does)."""
    return _TrialCache(storage) if isinstance(storage, RDBStorage) else storage
