"""Reading studies back: open one by name, list a storage's studies, rank and count trials."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studyhall.errors import SpecError, StudyNotFoundError
from studyhall.storage import StorageURL, open_storage, parse_url
from studyhall.studies.spec import StudySpec, load_spec

__all__ = ["SPEC_ATTR", "StudyHandle", "StudySummary", "list_studies", "open_study", "stored_spec"]

SPEC_ATTR = "studyhall_spec"
"""Study user attribute that holds the spec, so a worker can join with the name alone."""

_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def stored_spec(name: str, attrs: dict[str, Any]) -> StudySpec | None:
    """The spec stored with study ``name`` (``None`` if it was not created by studyhall)."""
    raw = attrs.get(SPEC_ATTR)
    if raw is None:
        return None
    try:
        return load_spec(raw, source=f"the spec stored with study {name}")
    except SpecError as exc:
        raise SpecError(f"{exc} (written by another studyhall version?)") from None


@dataclass(frozen=True)
class StudySummary:
    """One line of ``list``: a study's name, size and best value."""

    name: str
    directions: tuple[str, ...]
    n_trials: int
    best_value: float | None
    objective: str | None
    sampler: str | None


class StudyHandle:
    """An existing study: its spec, trials and best results.

    Example:
        >>> handle = open_study("beale-tpe", "sqlite:///studyhall.db")  # doctest: +SKIP
        >>> handle.best_trial.params  # doctest: +SKIP
        {'x': 2.98, 'y': 0.49}
    """

    def __init__(self, study: Any, url: StorageURL) -> None:
        self.study = study
        self.url = url

    @property
    def name(self) -> str:
        return str(self.study.study_name)

    @property
    def spec(self) -> StudySpec | None:
        return stored_spec(self.name, self.study.user_attrs)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(d.name.lower() for d in self.study.directions)

    def trials(self, states: Sequence[str] | None = None) -> list[Any]:
        """Frozen trials, optionally only those in ``states`` (e.g. ``["COMPLETE"]``)."""
        from optuna.trial import TrialState

        wanted = tuple(TrialState[s] for s in states) if states else None
        return list(self.study.get_trials(deepcopy=False, states=wanted))

    def state_counts(self) -> dict[str, int]:
        """Trials per state, every state listed (zeros included); counted by the database on a
        SQL storage, without loading the trials."""
        from studyhall.storage._tally import tally_trials

        counts = tally_trials(self.study._storage, self.study._study_id).counts
        return {s: counts.get(s, 0) for s in _STATES}

    @property
    def best_trial(self) -> Any | None:
        """The best complete trial (single objective), or ``None`` if none completed."""
        if len(self.directions) > 1:
            raise ValueError("a multi-objective study has no single best trial; use best_trials")
        top = self.top_trials(1)
        return top[0] if top else None

    @property
    def best_trials(self) -> list[Any]:
        """The Pareto front (multi-objective) or the best trial, as a list."""
        return list(self.study.best_trials) if self.trials(["COMPLETE"]) else []

    def top_trials(self, n: int = 10) -> list[Any]:
        """The ``n`` best complete trials, best first (first objective for multi-objective).

        On a SQL storage the database ranks them and only those ``n`` are loaded: ``show`` on
        a study of 10,000 trials need not load them all.
        """
        reverse = self.directions[0] == "maximize"
        backend = getattr(self.study._storage, "_backend", self.study._storage)
        if hasattr(backend, "_load") and n <= 1000:
            done = backend._load(_top_ids(backend, self.study._study_id, reverse, n))
        else:
            done = self.trials(["COMPLETE"])
        return sorted(done, key=lambda t: (t.values[0], -t.number if reverse else t.number),
                      reverse=reverse)[:n]

    def trials_dataframe(self) -> Any:
        """All trials as a pandas DataFrame (params, values, states, durations, user attrs)."""
        return self.study.trials_dataframe()

    def __repr__(self) -> str:
        return f"StudyHandle({self.name!r}, {self.url.masked!r})"


def _top_ids(storage: Any, study_id: int, maximize: bool, n: int) -> list[int]:
    """Ids of the ``n`` best complete trials by their first value (ties: lower number first),
    ranked by the database; infinite values rank as Optuna ranks them."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    from studyhall.storage._pool import read_connection

    trials, values = models.TrialModel, models.TrialValueModel
    kind = values.TrialValueType
    sign = sqlalchemy.case((values.value_type == kind.INF_NEG, -1),
                           (values.value_type == kind.INF_POS, 1), else_=0)
    order = sqlalchemy.desc if maximize else sqlalchemy.asc
    query = (
        sqlalchemy.select(trials.trial_id)
        .join(values, sqlalchemy.and_(values.trial_id == trials.trial_id, values.objective == 0))
        .where(trials.study_id == study_id, trials.state == TrialState.COMPLETE)
        .order_by(order(sign), order(values.value), trials.number)
        .limit(n)
    )
    with read_connection(storage.engine) as connection:
        return [row[0] for row in connection.execute(query)]


def open_study(name: str, storage: str | None = None) -> StudyHandle:
    """Open an existing study by name.

    Raises:
        StudyNotFoundError: no study of that name (the message lists those that exist).
        StorageError: the storage cannot be reached.
    """
    import optuna

    url = parse_url(storage)
    backend = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        summaries = optuna.get_all_study_summaries(backend, include_best_trial=False)
        names = [s.study_name for s in summaries]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        have = ", ".join(sorted(names)) or "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {url.masked}{hint}; studies there: {have}."
        ) from None
    return StudyHandle(study, url)


def list_studies(storage: str | None = None) -> list[StudySummary]:
    """Every study in a storage, with its trial count and best value."""
    import optuna

    url = parse_url(storage)
    out = []
    for s in optuna.get_all_study_summaries(open_storage(url), include_best_trial=True):
        raw = s.user_attrs.get(SPEC_ATTR) or {}
        best = s.best_trial.values[0] if s.best_trial is not None and s.best_trial.values else None
        out.append(
            StudySummary(
                name=s.study_name,
                directions=tuple(d.name.lower() for d in s.directions),
                n_trials=s.n_trials,
                best_value=best,
                objective=(raw.get("objective") or {}).get("name"),
                sampler=(raw.get("sampler") or {}).get("name"),
            )
        )
    return sorted(out, key=lambda s: s.name)
