"""Read trials from a SQL storage with one plain select per table, not through the ORM.

Optuna loads a study by building an ORM object for every row of six tables (a trial, its
params, values, intermediate values, user and system attributes) and then a ``FrozenTrial``
from each: 5.2 s on SQLite and 7.4 s on PostgreSQL for 10,000 trials with 5-step curves, paid
by every report, export and worker start. The same rows read as tuples (SQLAlchemy Core) and
turned into ``FrozenTrial`` objects directly take 0.7 and 0.8 s. The storage's ``_get_trials``
and its load by id (``_mirror.py``) use this module. The trials are those Optuna's
``RDBStorage._get_trials`` returns, built the
same way: values decoded by Optuna's own functions (an infinity or NaN is stored as NULL plus
a type column), times turned from the stored UTC into local time, params in the order they
were suggested, attributes parsed from their JSON.

The trials are read first and their rows after them, as Optuna's loader does: a row whose
trial was created in between is dropped, and a trial still running may come with a report or
value that arrived in between (as with Optuna's).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

from studyhall.storage._pool import read_connection

__all__ = ["LOAD_CHUNK", "load_study_trials", "load_trials_by_id"]

LOAD_CHUNK = 500
"""Trial ids per ``IN (...)`` list (SQLite allows at most 32,766 bound parameters)."""

_Scope = Callable[[Any, Sequence[Any]], Any]  # (child model, columns) -> select of its rows


def load_study_trials(
    engine: Any,
    study_id: int,
    states: Container[Any] | None = None,
    included_trial_ids: Iterable[int] = (),
    trial_id_greater_than: int = -1,
) -> list[Any]:
    """What ``RDBStorage._get_trials`` returns: ``study_id``'s trials with an id above
    ``trial_id_greater_than`` or in ``included_trial_ids`` (only ``states``, if given), by id.

    Raises:
        KeyError: there is no study ``study_id`` (Optuna's error).
    """
    import sqlalchemy
    from optuna.storages._rdb import models

    trials = models.TrialModel
    after = trial_id_greater_than
    where: list[Any] = [trials.study_id == study_id]
    if states is not None:
        assert isinstance(states, Iterable)  # a Container in Optuna's signature, a tuple in use
        where.append(trials.state.in_(list(states)))
    listed_ids = sorted(i for i in included_trial_ids if i <= after)
    with read_connection(engine) as connection:
        ranged = connection.execute(_trials_select().where(*where, trials.trial_id > after)).all()
        listed = [row for chunk in _chunks(listed_ids) for row in connection.execute(
            _trials_select().where(*where, trials.trial_id.in_(chunk)))]
        if not ranged and not listed:
            _check_study(connection, study_id)
            return []
        rows = [*ranged, *listed]
        if len(ranged) <= LOAD_CHUNK:  # a few new trials: their rows by id, through the index
            return _build(connection, rows, _by_id([r[0] for r in rows]))

        def in_range(child: Any, columns: Sequence[Any]) -> Any:
            return (sqlalchemy.select(*columns)
                    .join(trials, trials.trial_id == child.trial_id)
                    .where(trials.study_id == study_id, trials.trial_id > after))

        return _build(connection, rows, [in_range, *_by_id([r[0] for r in listed])])


def load_trials_by_id(engine: Any, trial_ids: Sequence[int]) -> list[Any]:
    """The trials with these ids (any study's), by id; ids that do not exist are left out."""
    from optuna.storages._rdb import models

    trials = models.TrialModel
    with read_connection(engine) as connection:
        rows = [row for chunk in _chunks(sorted(trial_ids)) for row in connection.execute(
            _trials_select().where(trials.trial_id.in_(chunk)))]
        return _build(connection, rows, _by_id([r[0] for r in rows])) if rows else []


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[i:i + LOAD_CHUNK] for i in range(0, len(ids), LOAD_CHUNK)]


def _trials_select() -> Any:
    import sqlalchemy
    from optuna.storages._rdb import models

    t = models.TrialModel
    return sqlalchemy.select(t.trial_id, t.number, t.state, t._datetime_start_utc,
                             t._datetime_complete_utc)


def _local(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A stored time (naive UTC) as Optuna hands it out: naive local time."""
    if moment is None:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def _check_study(connection: Any, study_id: int) -> None:
    import sqlalchemy
    from optuna.storages._rdb import models

    study = models.StudyModel
    query = sqlalchemy.select(study.study_id).where(study.study_id == study_id)
    if connection.execute(query).first() is None:
        raise KeyError(models.NOT_FOUND_MSG)


def _by_id(trial_ids: Sequence[int]) -> list[_Scope]:
    """Scopes reading the rows of these trials, ``LOAD_CHUNK`` ids a select."""
    import sqlalchemy

    def scope(chunk: Sequence[int]) -> _Scope:
        return lambda child, columns: (sqlalchemy.select(*columns)
                                       .where(child.trial_id.in_(chunk)))

    return [scope(chunk) for chunk in _chunks(sorted(trial_ids))]


def _rows(connection: Any, child: Any, columns: Sequence[Any], scopes: list[_Scope]) -> list[Any]:
    """``columns`` of ``child``'s rows in every scope, in the order they were written (their
    primary key): params in the order they were suggested, as Optuna sorts them; attributes in
    the order they were set, on every database (Optuna's own order there varies by backend)."""
    primary = child.__mapper__.primary_key[0]
    out: list[Any] = []
    for scope in scopes:
        out += connection.execute(scope(child, columns).order_by(primary)).all()
    return out


def _build(connection: Any, trial_rows: Sequence[Any], scopes: list[_Scope]) -> list[Any]:
    """``FrozenTrial`` objects for ``trial_rows``, their other rows read in ``scopes``."""
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models
    from optuna.trial import FrozenTrial

    params = models.TrialParamModel
    values = models.TrialValueModel
    steps = models.TrialIntermediateValueModel
    user, system = models.TrialUserAttributeModel, models.TrialSystemAttributeModel
    parts: dict[int, tuple[dict[str, Any], dict[str, Any], dict[int, float], dict[str, Any],
                           dict[str, Any], dict[int, float]]] = {
        row[0]: ({}, {}, {}, {}, {}, {}) for row in trial_rows}
    distributions: dict[str, Any] = {}  # parsed once per distinct JSON, not once per row
    for trial_id, name, value, dist_json in _rows(connection, params, (
            params.trial_id, params.param_name, params.param_value, params.distribution_json),
            scopes):
        part = parts.get(trial_id)
        if part is None:
            continue
        dist = distributions.get(dist_json)
        if dist is None:
            dist = distributions[dist_json] = json_to_distribution(dist_json)
        part[0][name] = dist.to_external_repr(value)
        part[1][name] = dist
    for trial_id, objective, value, kind in _rows(connection, values, (
            values.trial_id, values.objective, values.value, values.value_type), scopes):
        if trial_id in parts:
            parts[trial_id][5][objective] = values.stored_repr_to_value(value, kind)
    for trial_id, step, value, kind in _rows(connection, steps, (
            steps.trial_id, steps.step, steps.intermediate_value, steps.intermediate_value_type),
            scopes):
        if trial_id in parts:
            parts[trial_id][2][step] = steps.stored_repr_to_intermediate_value(value, kind)
    for slot, attrs in ((3, user), (4, system)):
        for trial_id, key, value_json in _rows(
                connection, attrs, (attrs.trial_id, attrs.key, attrs.value_json), scopes):
            if trial_id in parts:
                parts[trial_id][slot][key] = json.loads(value_json)
    out = []
    for trial_id, number, state, start, complete in trial_rows:
        p, d, curve, user_attrs, system_attrs, by_objective = parts[trial_id]
        trial_values: list[float] | None = None
        if by_objective:  # as Optuna: one slot per stored value, filled by objective index
            trial_values = [0.0] * len(by_objective)
            for objective, v in by_objective.items():
                trial_values[objective] = v
        out.append(FrozenTrial(
            number=number, state=state, value=None, values=trial_values,
            datetime_start=_local(start), datetime_complete=_local(complete), params=p,
            distributions=d, user_attrs=user_attrs, system_attrs=system_attrs,
            intermediate_values=curve, trial_id=trial_id))
    return sorted(out, key=lambda t: t._trial_id)
