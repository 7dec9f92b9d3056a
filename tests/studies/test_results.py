"""Reading a study back: the database ranks and counts, and agrees with the trials."""

from __future__ import annotations

import math

import optuna
import pytest

from studyhall.storage import open_storage, parse_url
from studyhall.studies.results import StudyHandle
from tests.conftest import storage_for

VALUES = [3.0, -1.0, math.inf, 2.0, -1.0, -math.inf, 7.5, 2.0, math.inf]


@pytest.fixture(params=["sqlite", "postgresql", "mysql", "journal"])
def url(request):
    return storage_for(request.param, request)


def _python_order(trials, maximize):
    return sorted(trials, key=lambda t: (t.values[0], -t.number if maximize else t.number),
                  reverse=maximize)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_top_trials_are_the_best_complete_ones_ties_by_number(url, study_name, direction):
    study = optuna.create_study(storage=open_storage(url), study_name=study_name,
                                direction=direction)
    for v in VALUES:
        study.add_trial(optuna.trial.create_trial(value=v))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    handle = StudyHandle(optuna.load_study(study_name=study_name, storage=open_storage(url)),
                         parse_url(url))
    expected = _python_order(handle.trials(["COMPLETE"]), direction == "maximize")
    for n in (1, 4, 20):
        assert [t.number for t in handle.top_trials(n)] == [t.number for t in expected[:n]]
    assert handle.best_trial.number == expected[0].number
    assert handle.state_counts() == {"COMPLETE": len(VALUES), "PRUNED": 1, "FAIL": 0,
                                     "RUNNING": 0, "WAITING": 0}
    assert handle.top_trials(3)[0].params == expected[0].params
    if not url.startswith(("sqlite", "journal")):
        optuna.delete_study(study_name=study_name, storage=url)
