"""Keep the trials this process runs in memory, so the storage never reads them back.

Optuna's ``_CachedStorage`` caches finished trials only: while a trial runs, every sampler call
(``study._get_trials``, three per no-op trial with TPE) and every ``get_trial`` re-reads it from
the database with its params, values and attributes: six queries each, ~27 of a no-op trial's 47
statements. All writes to a trial this process runs pass through this storage object, so a copy
kept up to date here is exact. Writes still go to the database first (and still check there that
the trial is RUNNING: a worker whose trial another worker failed as stale must not overwrite it),
so durability is unchanged. When the trial finishes, its last rows, its values and its state go in
one transaction that reads back its times (the database's own: MySQL keeps whole seconds), and the
finished copy is handed to Optuna's cache once. A no-op TPE trial then takes 18 statements instead
of 47. The reads this module adds run outside a transaction on PostgreSQL
(``_pool.read_connection``).

A running trial's writes are batched too. Its reports (one per epoch) reach the database at most
``CURVE_FLUSH_S`` apart, in one transaction, and all of them before its state changes. A
studyhall worker also defers the trial's parameters and user attributes (``defer_writes``) and
writes them once every parameter is suggested (``write_pending``: a retry of a dead worker's
trial copies them from there); later attributes go with the reports. A 30-epoch breast-cancer
trial lasts a tenth of a second here, and its 17 small commits (each parameter, each
attribute, creation, heartbeat, end) held the database against the other workers of the
study; it now makes 7. Pruners read reports from this process's copy (its own trial) or from
finished trials (the others'); only a live trial in the dashboard lags, by at most
``CURVE_FLUSH_S``, and a worker killed mid-trial loses at most that much of a trial that
becomes FAIL anyway. System attributes are written at once: samplers coordinate workers
through them (the grid's ``grid_id``).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from studyhall.storage._pool import read_connection
from studyhall.storage._trials import LOAD_CHUNK, load_study_trials, load_trials_by_id
from studyhall.storage._writes import attr_row, param_row, upsert

__all__ = ["OwnTrialsMirror"]

CURVE_FLUSH_S = 1.0
"""Longest a running trial's reported value waits before it is written."""


@dataclass
class _Pending:
    """A running trial's writes not yet in the database."""

    params: dict[str, tuple[float, Any, Any]] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)

    def merge_under(self, newer: _Pending | None) -> _Pending:
        """These writes with ``newer``'s on top (a failed write goes back in the queue)."""
        if newer is not None:
            self.params.update(newer.params)
            self.user_attrs.update(newer.user_attrs)
            self.curve.update(newer.curve)
        return self


class OwnTrialsMirror:
    """Mixin for ``RDBStorage``: serve the running trials this process created from memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._own: dict[int, Any] = {}
        self._pending: dict[int, _Pending] = {}
        self._deferred: set[int] = set()  # trials whose parameters and attributes wait too
        self._written_at: dict[int, float] = {}
        self._pending_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def delete_study(self, study_id: int) -> None:
        from studyhall.storage._tally import forget

        super().delete_study(study_id)  # type: ignore[misc]
        forget(self, study_id)  # SQLite may give a new study this id and its trials' ids

    def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
        trial = super()._create_new_trial(study_id, template_trial)  # type: ignore[misc]
        # Only a trial this process runs: a WAITING one (a retry queued here) is anyone's.
        if trial.state == TrialState.RUNNING:
            self._own[trial._trial_id] = copy.deepcopy(trial)
        return trial

    def get_trial(self, trial_id: int) -> Any:
        own = self._own.get(trial_id)
        if own is not None:
            return copy.deepcopy(own)
        return super().get_trial(trial_id)  # type: ignore[misc]

    def _get_trials(
        self,
        study_id: int,
        states: Container[Any] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[Any]:
        own = self._own
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        if states is not None or not (own or included):
            # A plain range (or the first, whole load): one select per table (``_trials.py``).
            return load_study_trials(self.engine, study_id, states,  # type: ignore[attr-defined]
                                     included_trial_ids, trial_id_greater_than)
        # One light query for the ids, then the full load of the others' trials only.
        ids = self._trial_ids(study_id, included, trial_id_greater_than)
        mine = [copy.deepcopy(own[i]) for i in ids if i in own]
        for trial in mine:  # a finished one is handed over once: the caller's cache keeps it
            if trial.state.is_finished():
                del own[trial._trial_id]
        others = ids - {t._trial_id for t in mine}
        if len(others) > LOAD_CHUNK:  # a first look at a big study: by range, not by id
            ranged = load_study_trials(self.engine, study_id, None,  # type: ignore[attr-defined]
                                       included, trial_id_greater_than)
            mine += [t for t in ranged if t._trial_id in others]
        elif others:
            mine += self._load(sorted(others))
        return sorted(mine, key=lambda t: t._trial_id)

    def _trial_ids(self, study_id: int, included: set[int], greater_than: int) -> set[int]:
        """Ids of the study's trials above ``greater_than`` or in ``included``.

        Two selects in one statement, not ``id > n OR id IN (...)``: SQLite answers the
        ``OR`` by walking every trial of the study (3-7 ms at 10,000 trials), each half by its
        index.
        """
        import sqlalchemy
        from optuna.storages._rdb import models

        trials = models.TrialModel
        query: Any = sqlalchemy.select(trials.trial_id).where(
            trials.study_id == study_id, trials.trial_id > greater_than)
        if included:
            query = sqlalchemy.union_all(query, sqlalchemy.select(trials.trial_id).where(
                trials.study_id == study_id, trials.trial_id.in_(sorted(included))))
        with read_connection(self.engine) as connection:  # type: ignore[attr-defined]
            return {row[0] for row in connection.execute(query)}

    def _load(self, trial_ids: list[int]) -> list[Any]:
        """Whole trials by id, one select per table (``_trials.py``)."""
        return load_trials_by_id(self.engine, trial_ids)  # type: ignore[attr-defined]

    def _running_own(self, trial_id: int) -> Any:
        own = self._own.get(trial_id)
        return own if own is not None and own.state == TrialState.RUNNING else None

    def defer_writes(self, trial_id: int) -> None:
        """Hold ``trial_id``'s parameters and user attributes until ``write_pending``, a
        report's write or its state change (this process's own running trials only)."""
        if self._running_own(trial_id) is not None:
            self._deferred.add(trial_id)

    def _deferring(self, trial_id: int) -> bool:
        return trial_id in self._deferred and self._running_own(trial_id) is not None

    def _set_trial_param(self, trial_id: int, name: str, value: float, dist: Any,
                         previous: Any) -> None:
        if self._deferring(trial_id):
            with self._pending_lock:
                pending = self._pending.setdefault(trial_id, _Pending())
                pending.params[name] = (value, dist, previous)
        else:
            super()._set_trial_param(trial_id, name, value, dist, previous)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.params[name] = dist.to_external_repr(value)
            own.distributions[name] = dist

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        own = self._own
        try:
            if state.is_finished() and trial_id in own:
                changed = self._finish(trial_id, state, values)
            else:
                self.write_pending(trial_id)
                changed = bool(super().set_trial_state_values(trial_id, state, values))  # type: ignore[misc]
        except BaseException:
            own.pop(trial_id, None)  # refused (another worker failed it as stale): read it back
            raise
        finally:
            if state.is_finished():
                self._written_at.pop(trial_id, None)
                self._deferred.discard(trial_id)
        if not changed:
            own.pop(trial_id, None)
        return changed

    def _finish(self, trial_id: int, state: Any, values: Any) -> bool:
        """End this process's own trial: its pending rows, its values and its state in one
        transaction, and its copy updated with the times as stored.

        Optuna's way took three sessions (the pending rows, the state, a read of the times),
        each write a wait of its own for SQLite's write lock while another worker holds it.
        """
        from datetime import datetime

        import sqlalchemy
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with self._pending_lock:
            pending = self._pending.pop(trial_id, None)
        try:
            with _create_scoped_session(self.scoped_session) as session:  # type: ignore[attr-defined]
                row = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, row.state)  # type: ignore[attr-defined]
                if pending is not None:
                    self._add_rows(session, trial_id, pending)
                for objective, value in enumerate(values or ()):
                    self._set_trial_value_without_commit(  # type: ignore[attr-defined]
                        session, row, objective, value)
                row.state = state
                row.datetime_complete = datetime.now()
                if session.get_bind().dialect.name == "mysql":  # it keeps whole seconds
                    session.flush()
                    session.refresh(row, ["_datetime_complete_utc"])
                start, complete = row.datetime_start, row.datetime_complete
        except sqlalchemy.exc.IntegrityError:
            # A row another process wrote first: Optuna's way, the pending rows dropped as
            # ``write_pending`` drops them; the copy goes, so the trial is read back.
            del self._own[trial_id]
            return bool(super().set_trial_state_values(trial_id, state, values))  # type: ignore[misc]
        except Exception as exc:
            from studyhall.storage import is_transient

            if pending is not None and is_transient(exc):  # the next try writes them
                with self._pending_lock:
                    self._pending[trial_id] = pending.merge_under(self._pending.get(trial_id))
            raise
        trial = self._own[trial_id]
        trial.state = state
        trial.values = None if values is None else [float(v) for v in values]
        trial.datetime_start, trial.datetime_complete = start, complete
        return True

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        own = self._running_own(trial_id)
        if own is None:
            super().set_trial_intermediate_value(trial_id, step, value)  # type: ignore[misc]
            return
        own.intermediate_values[step] = value
        now = time.monotonic()
        with self._pending_lock:
            self._pending.setdefault(trial_id, _Pending()).curve[step] = value
            due = now - self._written_at.get(trial_id, -CURVE_FLUSH_S) >= CURVE_FLUSH_S
        if due:
            self.write_pending(trial_id)

    def write_pending(self, trial_id: int) -> None:
        """Write ``trial_id``'s pending parameters, user attributes and reports in one
        transaction (refused, as each would be, when the trial is no longer RUNNING)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with self._pending_lock:
            pending = self._pending.pop(trial_id, None)
            self._written_at[trial_id] = time.monotonic()
        if pending is None:
            return
        try:
            with _create_scoped_session(self.scoped_session, True) as session:  # type: ignore[attr-defined]
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[attr-defined]
                self._add_rows(session, trial_id, pending)
        except Exception as exc:
            from studyhall.storage import is_transient

            if is_transient(exc):  # an outage: the next write (or the state change) retries
                with self._pending_lock:
                    self._pending[trial_id] = pending.merge_under(self._pending.get(trial_id))
            raise  # anything else is dropped, as one write would be, so FAIL can be written

    def _add_rows(self, session: Any, trial_id: int, pending: _Pending) -> None:
        """``pending``'s rows, each table's in one statement (Optuna's writes read the trial
        again for each parameter and attribute: ~5% of a warm 216-trial grid's time)."""
        import sqlalchemy
        from optuna.distributions import check_distribution_compatibility
        from optuna.storages._rdb import models

        params = pending.params
        if any(previous is None for _, _, previous in params.values()):
            # One not in Optuna's cache yet (a process's first trials): Optuna's own writes,
            # which read the study's distributions, in the order they were suggested.
            for name, (value, dist, previous) in params.items():
                self._set_trial_param_without_commit(  # type: ignore[attr-defined]
                    session, trial_id, name, value, dist, previous)
        elif params:
            for _, dist, previous in params.values():
                check_distribution_compatibility(previous, dist)
            session.execute(sqlalchemy.insert(models.TrialParamModel),
                            [param_row(trial_id, n, v, d) for n, (v, d, _) in params.items()])
        if pending.user_attrs:
            model = models.TrialUserAttributeModel
            session.execute(upsert(session.bind.dialect.name, model),
                            [attr_row(trial_id, k, v) for k, v in pending.user_attrs.items()])
        if pending.curve:
            self._add_curve(session, trial_id, pending.curve)

    @staticmethod
    def _add_curve(session: Any, trial_id: int, curve: dict[int, float]) -> None:
        # Optuna's own per-report write, for many steps at once: one read of the steps already
        # stored, then the new ones in one bulk insert. Optuna's two queries per step held the
        # database 15 ms for a 30-epoch curve; an ORM object and an INSERT per step made a
        # breast-cancer trial's end 4.8-5.0 ms, the bulk insert 3.2-3.6 ms (648 trials, 3 runs).
        import sqlalchemy
        from optuna.storages._rdb import models

        stored = models.TrialIntermediateValueModel
        existing: dict[Any, Any] = {row.step: row for row in session.query(stored).filter(
            stored.trial_id == trial_id, stored.step.in_(list(curve)))}
        rows = []
        for step, value in sorted(curve.items()):
            number, kind = stored.intermediate_value_to_stored_repr(value)
            row = existing.get(step)
            if row is None:
                rows.append({"trial_id": trial_id, "step": step, "intermediate_value": number,
                             "intermediate_value_type": kind})
            else:
                row.intermediate_value, row.intermediate_value_type = number, kind
        if rows:
            session.execute(sqlalchemy.insert(stored), rows)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if self._deferring(trial_id):
            stored = json.loads(json.dumps(value))  # fails here, as a write would, and copies
            with self._pending_lock:
                self._pending.setdefault(trial_id, _Pending()).user_attrs[key] = stored
        else:
            super().set_trial_user_attr(trial_id, key, value)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.user_attrs[key] = copy.deepcopy(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.system_attrs[key] = copy.deepcopy(value)
