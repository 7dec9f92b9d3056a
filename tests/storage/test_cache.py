"""A worker's trial cache: no sync for "which trials wait?" when none does; the same answers."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from studyhall.storage import open_storage
from studyhall.storage._cache import trial_cache
from tests.conftest import storage_for


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request):
    return storage_for(request.param, request)


def _statements(storage) -> list[str]:
    """The SQL of each statement run on ``storage``'s engine from now on."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", record)
    return seen


def test_no_waiting_trial_is_answered_without_reading_other_workers_trials(url, study_name):
    other = optuna.create_study(storage=open_storage(url), study_name=study_name)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    other.ask().suggest_float("x", 0, 1)  # another worker's running trial
    storage = open_storage(url)
    cache = trial_cache(storage)
    study = optuna.load_study(study_name=study_name, storage=cache)
    assert study._storage is cache
    seen = _statements(storage)
    assert study._pop_waiting_trial_id() is None
    assert seen and not any("trial_params" in s or "trial_intermediate" in s for s in seen)
    # Any other question syncs as Optuna's cache does: the other worker's trials, whole.
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    assert all("x" in t.params for t in trials)
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_waiting_trial_is_still_found_and_run(url, study_name):
    other = optuna.create_study(storage=open_storage(url), study_name=study_name)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    study = optuna.load_study(study_name=study_name, storage=trial_cache(open_storage(url)))
    assert study._pop_waiting_trial_id() is None
    other.enqueue_trial({"x": 0.25})  # a queued configuration, or a dead worker's retry
    trial = study.ask()
    assert trial.suggest_float("x", 0, 1) == 0.25
    study.tell(trial, 1.0)
    assert [t.params["x"] for t in other.get_trials()][1] == 0.25
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_storage_optuna_does_not_cache_is_handed_back_as_it_is(tmp_path):
    journal = open_storage(f"journal:///{tmp_path / 'log.jsonl'}")
    assert trial_cache(journal) is journal
