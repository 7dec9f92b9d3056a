"""Counting a study's trials by state without loading them: the database's answer is exact."""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from studyhall.storage import open_storage
from studyhall.storage._tally import scan, tally_trials
from tests.conftest import storage_for


@pytest.fixture(params=["sqlite", "postgresql", "mysql", "journal"])
def url(request):
    return storage_for(request.param, request)


def _fill(study: optuna.Study, values: list[float]) -> None:
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for v in values:
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=v))
    for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist,
                                                  state=state))
    study.enqueue_trial({"x": 0.1})  # WAITING
    study.ask()  # RUNNING: takes the queued trial
    study.ask()  # RUNNING
    study.enqueue_trial({"x": 0.2})


@pytest.mark.parametrize("values", [[3.0, -2.5, 7.0], [1.0, -math.inf], [math.inf, 2.0],
                                    [math.inf], [-math.inf, math.inf], []])
def test_the_tally_matches_the_trials_on_every_backend(url, study_name, values):
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name)
    _fill(study, values)
    tally = tally_trials(storage, study._study_id)
    assert tally == scan(study.get_trials(deepcopy=False))
    assert tally.counts == {"COMPLETE": len(values), "PRUNED": 2, "FAIL": 1, "RUNNING": 2,
                            "WAITING": 1}
    assert tally.low == (min(values) if values else None)
    assert tally.best(maximize=True) == (max(values) if values else None)
    if not url.startswith(("sqlite", "journal")):
        optuna.delete_study(study_name=study_name, storage=url)


def test_the_tally_follows_trials_as_they_change_on_every_backend(url, study_name):
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    other = optuna.load_study(study_name=study_name, storage=open_storage(url))
    seen = []

    def check() -> None:
        tally = tally_trials(storage, study._study_id)
        assert tally == scan(other.get_trials(deepcopy=False))
        seen.append(tally)

    check()  # empty
    first, second = study.ask(), other.ask()  # two workers' running trials
    check()
    other.tell(second, 2.0)  # the newer one finishes first
    check()
    study.enqueue_trial({"x": 0.3})
    third = other.ask()  # takes the queued trial
    check()
    study.tell(first, math.inf)
    other.tell(third, state=TrialState.FAIL)
    check()
    assert seen[-1].counts == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1, "RUNNING": 0, "WAITING": 0}
    assert seen[-1].best(maximize=True) == math.inf
    if not url.startswith(("sqlite", "journal")):
        optuna.delete_study(study_name=study_name, storage=url)


def test_the_tally_counts_only_its_study_and_sees_other_writers(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="mine")
    other = optuna.create_study(storage=open_storage(url), study_name="other",
                                direction="maximize")
    _fill(other, [5.0])
    # Through Optuna's cache (what a study's ``_storage`` is) and written by another process.
    mine.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert tally_trials(mine._storage, mine._study_id).counts["COMPLETE"] == 3
    elsewhere = optuna.load_study(study_name="mine", storage=optuna.storages.RDBStorage(url))
    elsewhere.optimize(lambda t: 2.0, n_trials=1)
    _fill(other, [7.0])
    tally = tally_trials(mine._storage, mine._study_id)
    assert tally.counts["COMPLETE"] == 4 and sum(tally.counts.values()) == 4
    assert tally.high == 2.0


def test_a_deleted_study_is_not_counted_into_a_new_one_with_its_id():
    storage = open_storage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage, study_name="a")
    _fill(study, [1.0, 2.0])
    assert tally_trials(storage, study._study_id).counts["COMPLETE"] == 2
    optuna.delete_study(study_name="a", storage=storage)
    again = optuna.create_study(storage=storage, study_name="b")
    again.add_trial(optuna.trial.create_trial(value=9.0))
    assert again._study_id == study._study_id  # SQLite gives the id out again
    tally = tally_trials(storage, again._study_id)
    assert tally.counts["COMPLETE"] == 1 and tally.low == 9.0


def test_a_tally_is_one_statement_whatever_the_study_size(tmp_path):
    url = f"sqlite:///{tmp_path / 'size.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage)
    _fill(study, [float(v) for v in range(300)])
    count = [0]
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda *a: count.__setitem__(0, count[0] + 1))
    assert tally_trials(storage, study._study_id).high == 299.0
    assert tally_trials(storage, study._study_id).high == 299.0
    assert count[0] == 2
