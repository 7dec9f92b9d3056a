"""Keep the trials this process runs in memory, so the storage never reads them back.

Optuna's ``_CachedStorage`` caches finished trials only: while a trial runs, every sampler call
(``study._get_trials``, three per no-op trial with TPE) and every ``get_trial`` re-reads it from
the database with its params, values and attributes: six queries each, ~27 of a no-op trial's
47 statements. All writes to a trial this process runs pass through this storage object, so a
copy kept up to date here is exact. Writes still go to the database first (and still check
there that the trial is RUNNING: a worker whose trial another worker failed as stale must
not overwrite it), so durability is unchanged. When the trial finishes, only its times are
read back (the database's own: MySQL keeps whole seconds), and the finished copy is handed to
Optuna's cache once. A no-op TPE trial then takes 18 statements instead of 47. The reads this
module adds run outside a transaction on PostgreSQL (``_pool.read_connection``).

Learning curves are written in batches: a running trial's reports (one per epoch) reach the
database at most ``CURVE_FLUSH_S`` apart, in one transaction, and all of them before its state
changes. A 30-epoch breast-cancer trial lasts under a second, and 30 commits were a tenth of
it. Pruners read reports from this process's copy (its own trial) or from finished trials
(the others'); only a live curve in the dashboard lags, by at most ``CURVE_FLUSH_S``, and a
worker killed mid-trial loses at most that much of a curve whose trial becomes FAIL anyway.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Container
from typing import Any

from optuna.trial import TrialState

from studyhall.storage._pool import read_connection
from studyhall.storage._trials import load_study_trials, load_trials_by_id

__all__ = ["OwnTrialsMirror"]

CURVE_FLUSH_S = 1.0
"""Longest a running trial's reported value waits before it is written."""


class OwnTrialsMirror:
    """Mixin for ``RDBStorage``: serve the running trials this process created from memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._own: dict[int, Any] = {}
        self._curves: dict[int, dict[int, float]] = {}  # reports not yet written, per trial
        self._written_at: dict[int, float] = {}
        self._curve_lock = threading.Lock()
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
        if others:
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

    def _set_trial_param(self, trial_id: int, name: str, value: float, dist: Any,
                         previous: Any) -> None:
        super()._set_trial_param(trial_id, name, value, dist, previous)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.params[name] = dist.to_external_repr(value)
            own.distributions[name] = dist

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        own = self._own
        try:
            self._write_curve(trial_id)
            changed = bool(super().set_trial_state_values(trial_id, state, values))  # type: ignore[misc]
        except BaseException:
            own.pop(trial_id, None)  # refused (another worker failed it as stale): read it back
            raise
        finally:
            if state.is_finished():
                self._written_at.pop(trial_id, None)
        trial = own.get(trial_id)
        if trial is None:
            return changed
        if not changed:
            del own[trial_id]
        elif state.is_finished():
            # Only the times are the database's own (MySQL keeps whole seconds): one small read.
            trial.state = state
            trial.values = None if values is None else [float(v) for v in values]
            trial.datetime_start, trial.datetime_complete = self._times(trial_id)
        return changed

    def _times(self, trial_id: int) -> tuple[Any, Any]:
        from optuna.storages._rdb import models
        from sqlalchemy.orm import Session

        engine = self.engine  # type: ignore[attr-defined]
        with read_connection(engine) as connection, Session(bind=connection) as session:
            row = models.TrialModel.find_or_raise_by_id(trial_id, session)  # no relations loaded
            return row.datetime_start, row.datetime_complete

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        own = self._own.get(trial_id)
        if own is None or own.state != TrialState.RUNNING:
            super().set_trial_intermediate_value(trial_id, step, value)  # type: ignore[misc]
            return
        own.intermediate_values[step] = value
        now = time.monotonic()
        with self._curve_lock:
            self._curves.setdefault(trial_id, {})[step] = value
            due = now - self._written_at.get(trial_id, -CURVE_FLUSH_S) >= CURVE_FLUSH_S
        if due:  # the first report goes at once: the dashboard sees the curve start
            self._write_curve(trial_id)

    def _write_curve(self, trial_id: int) -> None:
        """Write ``trial_id``'s pending reports in one transaction (refused, as one report
        would be, when the trial is no longer RUNNING)."""
        from optuna.storages._rdb.storage import _create_scoped_session

        with self._curve_lock:
            pending = self._curves.pop(trial_id, None)
            self._written_at[trial_id] = time.monotonic()
        if not pending:
            return
        # Optuna's own per-report write, for many steps at once: one check of the trial and
        # one read of the steps already stored, instead of two queries per step (a 30-epoch
        # curve held the database 15 ms, a whole trial's other writes together 12 ms).
        from optuna.storages._rdb import models

        stored = models.TrialIntermediateValueModel
        with _create_scoped_session(self.scoped_session, True) as session:  # type: ignore[attr-defined]
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[attr-defined]
            existing: dict[Any, Any] = {row.step: row for row in session.query(stored).filter(
                stored.trial_id == trial_id, stored.step.in_(list(pending)))}
            for step, value in sorted(pending.items()):
                number, kind = stored.intermediate_value_to_stored_repr(value)
                row = existing.get(step)
                if row is None:
                    session.add(stored(trial_id=trial_id, step=step, intermediate_value=number,
                                       intermediate_value_type=kind))
                else:
                    row.intermediate_value, row.intermediate_value_type = number, kind

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, value)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.user_attrs[key] = copy.deepcopy(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)  # type: ignore[misc]
        own = self._own.get(trial_id)
        if own is not None:
            own.system_attrs[key] = copy.deepcopy(value)
