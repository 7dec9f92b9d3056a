"""A worker that stays up and serves a storage's queue: every study with trials left to run.

A process's start (SQLAlchemy's, Keras' and JAX's imports, the first trial's loads) costs
~1 s here: a seventh to a tenth of a whole 216-trial breast-cancer grid, half of a 20-trial TPE
search. A serving worker pays it once: a study queued with ``run_study(..., workers=0)``
(``studyhall run SPEC --workers 0``) starts within a poll. Any number of them, on any machine
that reaches the storage, share the queue as workers share a study: the admission lock keeps
each study to its budget, and a study's trials go to whichever worker is free.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from studyhall.errors import Interrupted, SpecError, StudyhallError
from studyhall.storage import Heartbeat, is_transient, open_storage, parse_url
from studyhall.storage._tally import tally_trials
from studyhall.storage.urls import StorageURL
from studyhall.studies._progress import Progress, poll
from studyhall.studies.results import SPEC_ATTR, stored_spec
from studyhall.studies.worker import (
    _check_count,
    _check_seconds,
    _starting,
    _work,
    limit_threads,
)

__all__ = ["QueuedStudy", "serve_studies"]

_logger = logging.getLogger(__name__)

POLL_S = 0.2
"""How often an idle serving worker looks for queued studies: one small query per study."""


@dataclass(frozen=True)
class QueuedStudy:
    """A study with trials left to run, as a serving worker found it (``on_study``'s first
    argument): its name and how many finished trials it holds of its budget."""

    name: str
    finished: int
    budget: int


def serve_studies(
    storage: str | None = None,
    *,
    poll_s: float | None = None,
    idle_exit: float | None = None,
    heartbeat: Heartbeat | None = None,
    threads: int | None = None,
    index: int | None = None,
    on_study: Callable[[QueuedStudy, Progress | None], None] | None = None,
    on_progress: Callable[[QueuedStudy, Progress], None] | None = None,
) -> int:
    """Run the trials of every study in ``storage`` that has some left, oldest study first,
    and wait for more; Keras is imported once, before the first.

    A study is queued when it holds fewer finished trials than its budget (``n_trials``) and
    none of the rest are running; one bound by a timeout alone is left to its own run. A study
    that stops with trials left (its trials keep failing, or its objective is missing here) is
    passed over until its spec or its trials change. Nothing is lost on any stop: Ctrl-C or
    SIGTERM (under ``raising_signals``) fails the running trial and queues it again.

    Args:
        storage: the storage URL to serve (default ``sqlite:///studyhall.db``).
        poll_s: seconds between looks at an idle queue (default ``POLL_S``).
        idle_exit: return once the queue has been empty this many seconds (default: never).
        heartbeat: heartbeat settings (default: ``Heartbeat.resolve()``).
        threads: cap on this process's CPU threads (set before Keras is imported).
        index: this worker's number, which seeds its samplers as a ``run`` worker's does, so
            that a study it serves alone draws what ``run`` draws (default: at random; two
            serving workers with one index would draw the same points).
        on_study: called as each study starts (``Progress`` None) and as it ends.
        on_progress: called after each trial this worker finishes.

    Returns:
        How many studies this worker worked on.

    Raises:
        SpecError: bad arguments, or an in-memory SQLite URL (nothing else could queue there).
        StorageError: the storage cannot be reached at the start.
        Interrupted: SIGINT/SIGTERM arrived (under ``raising_signals``).
    """
    _check_seconds("poll_s", poll_s)
    _check_seconds("idle_exit", idle_exit)
    _check_count("threads", threads)
    _check_count("index", index, low=0)
    poll_s = POLL_S if poll_s is None else poll_s
    url = parse_url(storage)
    if url.backend == "sqlite" and url.path is None:
        raise SpecError(
            "a serving worker cannot serve an in-memory SQLite database (no other process can "
            "queue a study there); give a file or server URL."
        )
    if threads is not None:
        limit_threads(threads)
    heartbeat = heartbeat or Heartbeat.resolve()
    with _starting():
        store = open_storage(url, heartbeat=heartbeat)
        from studyhall.objectives._keras import keras

        keras()
    _logger.info("serving the studies queued in %s", url.masked)
    passed: dict[str, str] = {}  # name -> what it was when passed over
    served = 0
    idle_since = time.monotonic()
    while True:
        try:
            found = _next(store, passed)
            if found is not None:
                queued, key = found
                served += 1
                _serve_one(store, url, heartbeat, index, queued, on_study, on_progress)
                if _left(store, queued.name) == key:  # stopped without a trial more
                    passed[queued.name] = key
                    _logger.warning("study %s stopped with trials left; passed over until it "
                                    "is queued again or its trials change", queued.name)
                idle_since = time.monotonic()
                continue
        except Exception as exc:
            if not is_transient(exc):
                raise
            _logger.warning("storage %s unreachable (%s); looking again in %.1f s",
                            url.masked, " ".join(str(exc).split())[:200], max(poll_s, 1.0))
            time.sleep(max(poll_s, 1.0))
            continue
        if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
            return served
        time.sleep(poll_s)


def _serve_one(store: Any, url: StorageURL, heartbeat: Heartbeat, index: int | None,
               queued: QueuedStudy,
               on_study: Callable[[QueuedStudy, Progress | None], None] | None,
               on_progress: Callable[[QueuedStudy, Progress], None] | None) -> None:
    """Work on one queued study until it holds its budget; its errors stay its own."""
    _logger.info("study %s: %d of %d trials finished; working on it", queued.name,
                 queued.finished, queued.budget)
    if on_study is not None:
        on_study(queued, None)
    on_trial = None
    if on_progress is not None:
        def on_trial(study: Any, _trial: Any) -> None:
            on_progress(queued, poll(store, study._study_id, queued.budget))
    try:
        _work(queued.name, url, worker=index, heartbeat=heartbeat, storage=store,
              on_trial=on_trial)
    except Interrupted:
        raise
    except StudyhallError as exc:  # its data set is missing here, it was deleted...
        _logger.warning("study %s: %s", queued.name, exc)
    except Exception:
        if _study_id(store, queued.name) is None:
            _logger.warning("study %s was deleted while it ran", queued.name)
            return
        _logger.exception("study %s failed in this worker", queued.name)
    study_id = _study_id(store, queued.name)
    if on_study is not None and study_id is not None:
        on_study(queued, poll(store, study_id, queued.budget))


def _study_id(store: Any, name: str) -> int | None:
    """Study ``name``'s id; None once it is deleted."""
    try:
        return int(store.get_study_id_from_name(name))
    except KeyError:
        return None


def _next(store: Any, passed: dict[str, str]) -> tuple[QueuedStudy, str] | None:
    """The oldest queued study not passed over, with what it is now; None: the queue is empty."""
    for study in sorted(store.get_all_studies(), key=lambda s: s._study_id):
        spec = stored_spec(study.study_name, study.user_attrs)
        if spec is None or spec.budget is None:
            continue
        counts = tally_trials(store, study._study_id).counts
        finished = counts["COMPLETE"] + counts["PRUNED"]
        if finished + counts["RUNNING"] >= spec.budget:
            continue
        key = _key(study.user_attrs, counts)
        if passed.get(study.study_name) == key:
            continue
        passed.pop(study.study_name, None)
        return QueuedStudy(study.study_name, finished, spec.budget), key
    return None


def _left(store: Any, name: str) -> str | None:
    """What ``_next`` would compare for study ``name`` now (None: it is gone)."""
    study_id = _study_id(store, name)
    if study_id is None:
        return None
    return _key(store.get_study_user_attrs(study_id), tally_trials(store, study_id).counts)


def _key(user_attrs: dict[str, Any], counts: dict[str, int]) -> str:
    return json.dumps([user_attrs.get(SPEC_ATTR), counts["COMPLETE"] + counts["PRUNED"]],
                      sort_keys=True, default=str)
