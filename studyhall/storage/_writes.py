"""A running trial's parameter or attribute written in one statement.

Optuna writes each parameter and attribute in a transaction of its own: it reads the trial
(an ORM object), checks that it is not finished, then inserts (or upserts) the row and commits:
on PostgreSQL four round trips (``BEGIN``, the read, the insert, ``COMMIT``) and a session's
worth of Python, three times in a no-op TPE trial (two parameters and a sampler's system
attribute). Here the check is part of the insert (``INSERT ... SELECT ... WHERE`` the trial is
not finished), which commits on its own: one round trip, in autocommit mode on PostgreSQL. It
is as durable as Optuna's (the statement is committed when it returns) and the check is atomic
with the write, where Optuna's read and insert are two statements. A statement that writes
nothing is explained by reading the trial: Optuna's own error, raised as Optuna raises it.
"""

from __future__ import annotations

import json
from typing import Any

from studyhall.storage._pool import read_connection

__all__ = ["OneStatementWrites", "attr_row", "param_row", "upsert"]


def _updatable(trial_id: int) -> Any:
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials = models.TrialModel
    finished = [s for s in TrialState if s.is_finished()]
    return sqlalchemy.exists().where(trials.trial_id == trial_id, trials.state.not_in(finished))


def _row(columns: dict[str, Any], model: Any, trial_id: int) -> Any:
    """``SELECT`` of one row's values (typed binds: PostgreSQL infers none in a select list),
    only while the trial is not finished."""
    import sqlalchemy

    table = model.__table__
    return sqlalchemy.select(*(sqlalchemy.literal(value, table.c[name].type).label(name)
                               for name, value in columns.items())).where(_updatable(trial_id))


def _execute(storage: Any, statement: Any, trial_id: int) -> None:
    engine = storage.engine
    with read_connection(engine) as connection:  # SQLAlchemy keeps an INSERT's rowcount if asked
        written = connection.execute(statement.execution_options(preserve_rowcount=True)).rowcount
        connection.commit()
    if not written:
        _raise_not_updatable(storage, trial_id)


def _raise_not_updatable(storage: Any, trial_id: int) -> None:
    """Optuna's error for a write to ``trial_id``: missing (``KeyError``) or finished."""
    from optuna.storages._rdb import models
    from sqlalchemy.orm import Session

    with read_connection(storage.engine) as connection, Session(bind=connection) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        storage.check_trial_is_updatable(trial_id, trial.state)
        state = trial.state
    raise RuntimeError(f"trial id {trial_id} is {state.name}, yet the write was refused")


def param_row(trial_id: int, name: str, value: float, dist: Any) -> dict[str, Any]:
    """A ``trial_params`` row, as Optuna writes it."""
    from optuna.distributions import distribution_to_json

    return {"trial_id": trial_id, "param_name": name, "param_value": value,
            "distribution_json": distribution_to_json(dist)}


def attr_row(trial_id: int, key: str, value: Any) -> dict[str, Any]:
    """A user or system attribute's row, as Optuna writes it."""
    return {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}


def upsert(dialect: str, model: Any, rows: Any = None) -> Any:
    """An insert into an attribute table (``model``) that replaces the value of a key the
    trial already has, as Optuna's upsert does; from the select ``rows``, or from the values
    given at execution."""
    if dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement: Any = insert(model)
    if rows is not None:
        statement = statement.from_select(["trial_id", "key", "value_json"], rows)
    if dialect == "mysql":
        return statement.on_duplicate_key_update(value_json=statement.inserted.value_json)
    return statement.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                           set_={"value_json": statement.excluded.value_json})


def insert_param(storage: Any, trial_id: int, name: str, value: float, dist: Any) -> None:
    """Optuna's ``_set_trial_param_without_commit`` and its commit, as one statement (the
    distribution's compatibility is checked by the caller, as Optuna does)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    columns = param_row(trial_id, name, value, dist)
    statement = sqlalchemy.insert(models.TrialParamModel).from_select(
        list(columns), _row(columns, models.TrialParamModel, trial_id))
    _execute(storage, statement, trial_id)


def upsert_attr(storage: Any, model: Any, trial_id: int, key: str, value: Any) -> None:
    """Optuna's ``_set_trial_attr_without_commit`` and its commit, as one statement: the
    attribute (user or system: ``model``) inserted, or its value replaced."""
    rows = _row(attr_row(trial_id, key, value), model, trial_id)
    _execute(storage, upsert(storage.engine.dialect.name, model, rows), trial_id)


class OneStatementWrites:
    """Mixin for ``RDBStorage``: parameters and attributes written one statement each."""

    def _set_trial_param(self, trial_id: int, name: str, value: float, dist: Any,
                         previous: Any) -> None:
        from optuna.distributions import check_distribution_compatibility

        if previous is None:  # not in Optuna's cache yet: its own write reads the study's
            super()._set_trial_param(trial_id, name, value, dist, previous)  # type: ignore[misc]
            return
        check_distribution_compatibility(previous, dist)
        insert_param(self, trial_id, name, value, dist)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages._rdb import models

        upsert_attr(self, models.TrialUserAttributeModel, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages._rdb import models

        upsert_attr(self, models.TrialSystemAttributeModel, trial_id, key, value)
