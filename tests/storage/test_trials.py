"""Trials read with one select per table are the trials Optuna's ORM loader reads."""

from __future__ import annotations

import math
import time

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from studyhall.storage import _trials, open_storage
from tests.conftest import storage_for


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request) -> str:
    return storage_for(request.param, request)


@pytest.fixture
def away_from_utc(monkeypatch):
    """A local time zone with a half-hour offset: stored UTC times must be converted."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


DISTS = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "dropout": FloatDistribution(0.0, 0.6, step=0.3),
    "units": IntDistribution(8, 64, step=8),
    "act": CategoricalDistribution(["relu", None, True, 2.5]),
}


def _comparable(trial: optuna.trial.FrozenTrial) -> tuple:
    """Every field, NaN made comparable (NaN != NaN would fail any equality); params in their
    order (the order they were suggested), attributes and curves as sets (Optuna's own order of
    them differs between backends)."""
    def fix(value):
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return (trial._trial_id, trial.number, trial.state, fix(trial.values),
            list(fix(trial.params).items()), list(trial.distributions.items()),
            fix(trial.user_attrs), fix(trial.system_attrs), fix(trial.intermediate_values),
            trial.datetime_start, trial.datetime_complete)


def _fill(study: optuna.Study) -> None:
    """Every kind of trial a report meets: complete (finite and infinite values), pruned with
    a NaN/inf curve, failed, running, waiting; JSON attributes; all four distributions."""
    params = {"lr": 0.01, "dropout": 0.3, "units": 16, "act": None}
    for value, curve in ((0.5, {0: 1.0, 1: 0.75}), (math.inf, {0: math.inf}),
                         (-math.inf, {}), (-2.0, {0: -math.inf, 3: 2.0})):
        study.add_trial(create_trial(params=params, distributions=DISTS, value=value,
                                     intermediate_values=curve,
                                     user_attrs={"seed": 3, "note": {"a": [1, None]}},
                                     system_attrs={"fixed_params": {"x": 1}}))
    study.add_trial(create_trial(params={**params, "act": True}, distributions=DISTS,
                                 state=TrialState.PRUNED,
                                 intermediate_values={0: 3.0, 1: math.nan, 2: math.inf}))
    study.add_trial(create_trial(params={"units": 64}, distributions={"units": DISTS["units"]},
                                 state=TrialState.FAIL, user_attrs={"reason": "NaN loss"}))
    running = study.ask({"act": DISTS["act"], "lr": DISTS["lr"]})
    study._storage.set_trial_intermediate_value(running._trial_id, 0, 4.0)
    study.enqueue_trial({"units": 24})


def _ours_and_optunas(url: str, name: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    study = optuna.create_study(storage=open_storage(url), study_name=name)
    _fill(study)
    return study, optuna.storages.RDBStorage(url)


def test_the_loaded_trials_are_optunas_on_every_sql_backend(url, study_name, away_from_utc):
    study, optunas = _ours_and_optunas(url, study_name)
    ours = open_storage(url)  # a fresh process's storage: nothing mirrored or cached
    sid = study._study_id
    expected = [_comparable(t) for t in optunas.get_all_trials(sid)]
    assert [_comparable(t) for t in ours.get_all_trials(sid)] == expected
    assert {t[2] for t in expected} == set(TrialState)
    some = (TrialState.PRUNED, TrialState.RUNNING)
    assert ([_comparable(t) for t in ours.get_all_trials(sid, states=some)]
            == [_comparable(t) for t in optunas.get_all_trials(sid, states=some)])


def test_bulk_and_incremental_reads_agree_with_optuna(url, study_name, monkeypatch):
    # Chunks of 2 ids: the joined bulk path, several IN lists, and the included ids together.
    monkeypatch.setattr(_trials, "LOAD_CHUNK", 2)
    study, optunas = _ours_and_optunas(url, study_name)
    sid = study._study_id
    ids = [t._trial_id for t in optunas.get_all_trials(sid)]
    for included, greater in ((set(), -1), (set(), ids[2]), ({ids[0], ids[2]}, ids[3]),
                              ({ids[1]}, ids[-1])):
        got = _trials.load_study_trials(optunas.engine, sid, None, included, greater)
        want = optunas._get_trials(sid, None, included, greater)
        assert [_comparable(t) for t in got] == [_comparable(t) for t in want], (included, greater)
    by_id = _trials.load_trials_by_id(optunas.engine, [ids[4], ids[0], ids[6], 10**9])
    assert [_comparable(t) for t in by_id] == [
        _comparable(optunas.get_trial(i)) for i in (ids[0], ids[4], ids[6])]


def test_a_multi_objective_study_loads_as_optuna_loads_it(url, study_name):
    study = optuna.create_study(storage=open_storage(url), study_name=study_name,
                                directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), math.inf), n_trials=4)
    fresh = optuna.storages.RDBStorage(url).get_all_trials(study._study_id)
    assert ([_comparable(t) for t in open_storage(url).get_all_trials(study._study_id)]
            == [_comparable(t) for t in fresh])
    assert all(t.values[1] == math.inf for t in fresh)


def test_a_missing_study_is_a_key_error_as_in_optuna(sqlite_url):
    storage = open_storage(sqlite_url)
    with pytest.raises(KeyError):
        optuna.storages.RDBStorage(sqlite_url).get_all_trials(12345)
    with pytest.raises(KeyError):
        storage.get_all_trials(12345)
    sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "empty")
    assert storage.get_all_trials(sid) == []
