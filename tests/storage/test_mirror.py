"""The in-memory copy of a worker's own trials: exact, cheaper, and never hiding other writers."""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from studyhall.storage import open_storage
from studyhall.storage._cache import trial_cache
from tests.conftest import storage_for


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("note", {"x": x})
    for step in range(3):
        trial.report(x * step, step)
    if kind == "b" and x > 0.5:
        raise optuna.TrialPruned()
    return x**2


def _fields(t: optuna.trial.FrozenTrial) -> tuple:
    return (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs,
            t.system_attrs, t.intermediate_values, t.datetime_start, t.datetime_complete)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request):
    return storage_for(request.param, request)


def test_what_a_worker_sees_of_its_trials_is_what_the_database_holds(url, study_name):
    study = optuna.create_study(storage=open_storage(url), study_name=study_name)
    study.optimize(_objective, n_trials=25)
    fresh = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url))
    mine = study.get_trials()
    assert [_fields(t) for t in mine] == [_fields(t) for t in fresh.get_trials()]
    assert {t.state for t in mine} >= {TrialState.COMPLETE}
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_no_op_trial_takes_fewer_than_half_of_optunas_statements(tmp_path):
    def statements(storage) -> float:
        count = [0]
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                                lambda *a: count.__setitem__(0, count[0] + 1))
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=1))
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1),
                       n_trials=5)
        count[0] = 0
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1),
                       n_trials=20)
        return count[0] / 20

    url = f"sqlite:///{tmp_path / 'count.db'}"
    ours, optunas = statements(open_storage(url)), statements(optuna.storages.RDBStorage(url))
    assert ours <= optunas / 2, (ours, optunas)


def test_a_trial_failed_by_another_worker_is_read_back_not_overwritten(tmp_path):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    other = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    trial = mine.ask()
    trial.suggest_float("x", 0, 1)
    other.tell(trial.number, state=TrialState.FAIL)  # e.g. failed as stale by another worker
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        mine.tell(trial, 1.0)
    assert mine.get_trials()[0].state == TrialState.FAIL
    assert mine._storage.get_trial(trial._trial_id).state == TrialState.FAIL


def test_other_workers_trials_are_seen_while_they_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'others.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    running_mine = mine.ask()
    running_other = other.ask()
    running_other.suggest_float("y", 0, 1)
    seen = {t.number: t for t in mine.get_trials()}
    assert set(seen) == {running_mine.number, running_other.number}
    assert "y" in seen[running_other.number].params
    other.tell(running_other, 2.0)
    mine.tell(running_mine, 1.0)
    assert [t.value for t in mine.get_trials()] == [1.0, 2.0]


def test_a_first_look_at_many_others_trials_during_a_trial_reads_them_by_range(
        tmp_path, monkeypatch):
    from studyhall.storage import _mirror

    url = f"sqlite:///{tmp_path / 'many.db'}"
    other = optuna.create_study(storage=open_storage(url), study_name="s")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=_mirror.LOAD_CHUNK + 5)
    # A worker's cache asks nothing before its trial exists (``_cache.py``): the first
    # question comes from the sampler, during the trial.
    mine = optuna.load_study(study_name="s", storage=trial_cache(open_storage(url)))
    running = mine.ask()
    by_id: list[int] = []
    load = _mirror.load_trials_by_id
    monkeypatch.setattr(_mirror, "load_trials_by_id",
                        lambda engine, ids: by_id.extend(ids) or load(engine, ids))
    seen = mine.get_trials()
    assert not by_id  # one select per table over the range, not 2 x 6 by id lists
    fresh = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    assert [_fields(t) for t in seen[:-1]] == [_fields(t) for t in fresh.get_trials()[:-1]]
    assert seen[-1].number == running.number and seen[-1].state == TrialState.RUNNING


def test_a_trial_queued_here_and_run_elsewhere_is_seen_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'queued.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    mine.enqueue_trial({"x": 0.5})  # e.g. a dead worker's trial queued again by this worker
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [(t.state, t.value) for t in mine.get_trials()] == [(TrialState.COMPLETE, 0.5)]


def test_a_running_curve_is_written_in_batches_and_whole_before_the_trial_ends(tmp_path,
                                                                                monkeypatch):
    from studyhall.storage import _mirror

    url = f"sqlite:///{tmp_path / 'curve.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    reader = optuna.storages.RDBStorage(url)
    writes = []  # curve points written, as their statements are executed

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO trial_intermediate_values"):
            # One row per statement, or many rows per executemany.
            many = parameters and isinstance(parameters[0], (list, tuple, dict))
            writes.append(len(parameters) if many else 1)

    sqlalchemy.event.listen(mine._storage._backend.engine, "before_cursor_execute", count)
    trial = mine.ask()

    def stored() -> dict:
        return reader.get_trial(trial._trial_id).intermediate_values

    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 3600.0)
    for step in range(30):
        trial.report(step / 10, step)
        assert trial.should_prune() is False  # the pruner reads this process's copy
    assert stored() == {0: 0.0}  # the first report goes at once, the rest wait
    assert sum(writes) == 1
    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 0.0)
    trial.report(3.0, 30)
    assert len(stored()) == 31  # due: everything pending at once
    assert sum(writes) == 31
    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 3600.0)
    trial.report(3.1, 31)
    mine.tell(trial, 1.0)
    assert stored() == {**{s: s / 10 for s in range(31)}, 31: 3.1}


def test_a_step_reported_again_and_non_finite_values_are_stored_as_optuna_stores_them(
        tmp_path, monkeypatch):
    from studyhall.storage import _mirror

    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 3600.0)
    url = f"sqlite:///{tmp_path / 'again.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    trial = mine.ask()
    trial.report(0.5, 0)  # written at once
    trial.report(float("inf"), 1)
    # Trial.report refuses a step twice; the storage takes it (and replaces the stored one).
    mine._storage.set_trial_intermediate_value(trial._trial_id, 0, 0.7)
    trial.report(float("nan"), 2)
    mine.tell(trial, 1.0)
    curve = optuna.storages.RDBStorage(url).get_all_trials(mine._study_id)[0].intermediate_values
    assert curve[0] == 0.7 and curve[1] == float("inf") and math.isnan(curve[2])


def test_a_pending_curve_of_a_trial_failed_elsewhere_is_refused(tmp_path, monkeypatch):
    from studyhall.storage import _mirror

    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 3600.0)
    url = f"sqlite:///{tmp_path / 'stale-curve.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s")
    other = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    trial = mine.ask()
    trial.report(0.1, 0)
    trial.report(0.2, 1)  # pending
    other.tell(trial.number, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        mine.tell(trial, 1.0)
    assert other.get_trials()[0].intermediate_values == {0: 0.1}
    assert mine.get_trials()[0].state == TrialState.FAIL
    backend = getattr(mine._storage, "_backend", mine._storage)
    assert trial._trial_id not in backend._pending  # nothing held for a trial that is over


def _deferring(storage, objective):
    """``objective`` run as a studyhall worker runs it: writes deferred, then parameters."""

    def run(trial: optuna.Trial) -> float:
        storage.defer_writes(trial._trial_id)
        trial.set_user_attr("seed", 3)
        x = trial.suggest_float("x", -1, 1)
        trial.suggest_categorical("kind", ["a", "b"])
        storage.write_pending(trial._trial_id)
        return objective(trial, x)

    return run


def _commits(storage) -> list[int]:
    count = [0]
    sqlalchemy.event.listen(storage.engine, "commit", lambda *a: count.__setitem__(0, count[0] + 1))
    return count


def test_deferred_writes_reach_the_database_whole(url, study_name):
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name)
    study.optimize(_deferring(storage, lambda t, x: _objective(t)), n_trials=20)
    fresh = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url))
    assert [_fields(t) for t in study.get_trials()] == [_fields(t) for t in fresh.get_trials()]
    assert all(t.user_attrs["seed"] == 3 and "note" in t.user_attrs for t in fresh.get_trials())
    optuna.delete_study(study_name=study_name, storage=url)


def test_suggested_parameters_are_written_together_before_the_objective_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'deferred.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    other = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    seen = {}

    def objective(trial, x):
        seen["commits"] = commits[0] - before
        seen["params"] = other.get_trials()[0].params
        trial.set_user_attr("later", 1)  # deferred: written with the trial's end
        seen["later"] = other.get_trials()[0].user_attrs
        return x

    commits = _commits(storage)
    before = commits[0]
    study.optimize(_deferring(storage, objective), n_trials=1)
    assert set(seen["params"]) == {"x", "kind"} and seen["later"] == {"seed": 3}
    assert seen["commits"] == 2  # the trial's creation, then its parameters and attribute
    assert other.get_trials()[0].user_attrs == {"seed": 3, "later": 1}


def test_a_deferred_attribute_json_cannot_hold_fails_where_it_is_set(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'json.db'}")
    study = optuna.create_study(storage=storage)

    def objective(trial, x):
        with pytest.raises(TypeError):
            trial.set_user_attr("bad", object())
        return x

    study.optimize(_deferring(storage, objective), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE and "bad" not in study.trials[0].user_attrs


def test_parameters_the_study_refuses_still_let_the_trial_fail(tmp_path):
    url = f"sqlite:///{tmp_path / 'refused.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial = study.ask()
    storage.defer_writes(trial._trial_id)
    trial.suggest_categorical("x", ["a", "b"])  # "x" is a float in this study
    with pytest.raises(ValueError):
        storage.write_pending(trial._trial_id)
    study.tell(trial, state=TrialState.FAIL)
    fresh = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    assert fresh.trials[1].state == TrialState.FAIL and fresh.trials[1].params == {}


def test_a_trial_ends_with_its_last_rows_in_one_transaction(url, study_name, monkeypatch):
    from studyhall.storage import _mirror

    monkeypatch.setattr(_mirror, "CURVE_FLUSH_S", 3600.0)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name)
    trial = study.ask()
    storage.defer_writes(trial._trial_id)
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("seed", 3)
    trial.report(0.1, 0)
    trial.report(0.2, 1)
    commits = _commits(storage)
    before = commits[0]
    study.tell(trial, 0.5)
    assert commits[0] - before == 1  # the parameter, the attribute, the curve, value and state
    fresh = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url))
    assert [_fields(t) for t in study.get_trials()] == [_fields(t) for t in fresh.get_trials()]
    assert fresh.trials[0].intermediate_values == {0: 0.1, 1: 0.2}
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_trial_whose_pending_row_another_process_wrote_first_still_ends(tmp_path):
    url = f"sqlite:///{tmp_path / 'first.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    other = optuna.storages.RDBStorage(url)
    trial = study.ask()
    storage.defer_writes(trial._trial_id)
    dist = optuna.distributions.FloatDistribution(0, 1)
    trial.suggest_float("x", 0, 1)  # pending
    other.set_trial_param(trial._trial_id, "x", 0.25, dist)  # the same row, written first
    study.tell(trial, 0.5)
    stored = optuna.load_study(study_name="s", storage=other).trials[0]
    assert (stored.state, stored.value, stored.params) == (TrialState.COMPLETE, 0.5, {"x": 0.25})
    assert [_fields(t) for t in study.get_trials()] == [_fields(stored)]
