"""One-statement writes of parameters and attributes: Optuna's rows and Optuna's errors."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError

from studyhall.storage import open_storage
from tests.conftest import storage_for


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request):
    return storage_for(request.param, request)


def _rows(url: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        rows = [tuple(row) for table in ("trial_params", "trial_user_attributes",
                                         "trial_system_attributes")
                for row in connection.execute(sqlalchemy.text(
                    f"SELECT * FROM {table} ORDER BY 1"))]  # noqa: S608 - fixed names
    engine.dispose()
    return rows


def test_written_parameters_and_attributes_read_back_as_optunas(url, study_name):
    study = optuna.create_study(storage=open_storage(url), study_name=study_name)
    for _ in range(3):  # the first trial's parameters go Optuna's way (no cached distribution)
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.suggest_categorical("c", ["a", "b"])
        trial.set_user_attr("note", {"n": 1})
        trial.set_user_attr("note", {"n": 2})  # replaced...
        trial.set_user_attr("same", 5)
        trial.set_user_attr("same", 5)  # ...also with the value it had (MySQL counts 0 rows)
        study._storage.set_trial_system_attr(trial._trial_id, "sys", [1, "a"])
        study.tell(trial, 1.0)
    fresh = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url))
    for mine, stored in zip(study.get_trials(), fresh.get_trials(), strict=True):
        assert stored.user_attrs == {"note": {"n": 2}, "same": 5}
        assert stored.system_attrs["sys"] == [1, "a"]
        assert (mine.params, mine.distributions) == (stored.params, stored.distributions)
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_write_to_a_finished_or_missing_trial_raises_optunas_error_and_writes_nothing(
        url, study_name):
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name)
    for _ in range(2):  # the second trial's parameter: its distribution cached
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 1.0)
    done = trial._trial_id
    before = _rows(url)
    dist = FloatDistribution(0, 1)
    with pytest.raises(UpdateFinishedTrialError):
        storage._set_trial_param(done, "y", 0.5, dist, dist)
    for write in (storage.set_trial_user_attr, storage.set_trial_system_attr):
        with pytest.raises(UpdateFinishedTrialError):
            write(done, "k", 1)
        with pytest.raises(KeyError):
            write(done + 10**6, "k", 1)
    with pytest.raises(KeyError):
        storage._set_trial_param(done + 10**6, "y", 0.5, dist, dist)
    assert _rows(url) == before
    optuna.delete_study(study_name=study_name, storage=url)


def test_a_write_on_postgresql_is_one_statement_outside_a_transaction(postgres_url, study_name):
    storage = open_storage(postgres_url)
    study = optuna.create_study(storage=storage, study_name=study_name)
    trial = study.ask()
    seen: list[bool] = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", lambda conn, *_: seen.append(
        conn.connection.dbapi_connection.autocommit))
    storage.set_trial_user_attr(trial._trial_id, "k", 1)
    storage.set_trial_system_attr(trial._trial_id, "k", 1)
    storage._set_trial_param(trial._trial_id, "x", 0.5, FloatDistribution(0, 1), None)
    assert seen[:2] == [True, True]  # one autocommit statement each
    assert len(seen) > 3  # a first parameter (nothing cached): Optuna's transaction, its checks
    study.tell(trial, 1.0)
    optuna.delete_study(study_name=study_name, storage=storage)
