"""Workers: join a study by name and run its trials until the study holds its budget.

Every way of working on a study ends here: ``run`` in this process, each of ``run --workers N``'s
processes, and ``studyhall worker`` on any machine. A worker reads the spec stored with the study,
builds its sampler and pruner, and loops: under the storage's admission lock it counts finished
(complete + pruned) and running trials; if the study needs another it starts one through
``study.optimize``, whose heartbeats a thread of the worker's records, while another fails other
workers' dead trials every heartbeat interval; if every missing trial is already running elsewhere
it waits, failing stale ones as their grace period ends, so a dead worker's trial is retried
(Optuna queues a WAITING copy, which the next ``ask`` takes) and the study still ends with exactly
its budget. Lost connections are waited out with back-off; SIGINT/SIGTERM fail the running trial,
queue it again, and end the worker.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np

from studyhall.errors import (
    Interrupted,
    SpecError,
    StorageError,
    StudyhallError,
    StudyNotFoundError,
)
from studyhall.objectives.registry import get_objective
from studyhall.storage import (
    Heartbeat,
    StorageURL,
    admission_lock,
    is_transient,
    open_storage,
    parse_url,
)
from studyhall.storage.heartbeat import own_heartbeats, retry_callback
from studyhall.studies._progress import Progress, poll
from studyhall.studies.pruners import build_pruner
from studyhall.studies.results import StudyHandle, stored_spec
from studyhall.studies.samplers import build_sampler
from studyhall.studies.space import suggest
from studyhall.studies.spec import StudySpec

__all__ = ["join_study", "limit_threads", "raising_signals", "trial_seed"]

_logger = logging.getLogger(__name__)

MAX_FAILURE_STREAK = 10
"""A worker gives up after this many failed trials in a row."""
POLL_S = 0.5
"""How often a worker waiting for other workers' last trials looks again."""
OUTAGE_S = 300.0
"""How long a worker waits out a storage that cannot be reached before it gives up."""


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number``: fixed by the study seed, so a trial re-runs exactly."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


def _sampler_seed(study_seed: int, n_existing: int, worker: int | None) -> int:
    # A resumed run must not replay the first run's random draws: mix in the study's size. A
    # worker joining by name has no index: two of them must still draw different points.
    salt = worker if worker is not None else random.SystemRandom().randrange(2**31)
    return int(np.random.SeedSequence([study_seed, n_existing, salt, 7]).generate_state(1)[0])


def limit_threads(threads: int) -> None:
    """Keep N workers on N cores from fighting: cap BLAS, XLA and TensorFlow thread pools.

    Takes effect for libraries imported afterwards (a worker imports Keras when it starts, in
    its objective's ``prepare``).
    ``PJRT_NPROC`` sizes XLA's CPU thread pool, which otherwise takes every core whatever
    ``XLA_FLAGS`` say: 30 epochs of a 30-64-1 network used 1.6 cores, for no shorter a time.
    """
    for var in (
        "PJRT_NPROC",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ[var] = str(threads)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


class _TrialFailed(Exception):
    """An objective error that fails one trial but lets the study go on."""


_SURPLUS = "one trial too many"


class _Surplus(_TrialFailed):
    """A trial started while this worker's admission lock was lost: the study had no room."""


class _CurveOnly:
    """A multi-objective trial as objectives see it: Optuna refuses ``report`` there (no
    pruning), so per-epoch values are kept and stored as the user attribute ``curve``."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial
        self.curve: dict[int, float] = {}

    def report(self, value: float, step: int) -> None:
        self.curve[int(step)] = float(value)

    def should_prune(self) -> bool:
        return False

    @property
    def optuna_trial(self) -> Any:
        return self._trial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class _TrialFunction:
    """What ``study.optimize`` calls: seed, suggest, run the objective, classify failures."""

    def __init__(self, spec: StudySpec, on_start: Callable[[], None],
                 url: StorageURL | None = None, storage: Any = None) -> None:
        self.spec = spec
        self.url = url  # where the study lives: its trained models are saved beside it
        # A storage that batches a running trial's writes (``storage/_mirror.py``): its
        # parameters are written once all are suggested (a dead worker's retry copies them).
        self.batching = storage if hasattr(storage, "write_pending") else None
        self.options = dict(spec.objective.options)
        info = get_objective(spec.objective.name)
        self.objective = info.factory()
        if info.prepare is not None:
            info.prepare()
        self.on_start = on_start
        self.current: Any = None

    def __call__(self, trial: Any) -> Any:
        import optuna

        self.current = trial
        try:
            self.on_start()  # the trial exists: other workers may count it now
        except _Surplus as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        if self.batching is not None:
            self.batching.defer_writes(trial._trial_id)
        # A retried trial re-runs its original exactly: same seed, same parameters.
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
        number = attrs.get("failed_trial", trial.number)
        seed = trial_seed(self.spec.seed or 0, number)
        trial.set_user_attr("seed", seed)
        random.seed(seed)
        np.random.seed(seed)
        params = {**self.options, **suggest(trial, self.spec.space)}
        if self.batching is not None:
            self.batching.write_pending(trial._trial_id)
        from studyhall.objectives._artifacts import trial_artifacts

        seen = trial if len(trial.study.directions) == 1 else _CurveOnly(trial)
        try:
            with trial_artifacts(self.url, self.options):
                return self.objective(seen, params)
        except Interrupted as exc:
            trial.set_user_attr("fail_reason", f"interrupted by {exc.signal_name}")
            raise
        except (optuna.TrialPruned, StudyhallError, MemoryError):
            raise
        except Exception as exc:
            if is_transient(exc):  # the storage, not the objective: the loop backs off
                raise
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            trial.set_user_attr("fail_reason", reason)
            raise _TrialFailed(reason) from exc
        finally:
            if isinstance(seen, _CurveOnly) and seen.curve:
                trial.set_user_attr("curve", seen.curve)


class _FailureStreak:
    """Stop after ``MAX_FAILURE_STREAK`` failures in a row (a broken objective)."""

    def __init__(self) -> None:
        self.streak = 0

    def __call__(self, study: Any, trial: Any) -> None:
        if trial.state.name != "FAIL":
            self.streak = 0
            return
        if str(trial.user_attrs.get("fail_reason", "")).startswith(_SURPLUS):
            return  # not the objective's failure
        self.streak += 1
        if self.streak >= MAX_FAILURE_STREAK:
            _logger.error("%d trials failed in a row; this worker stops", self.streak)
            study.stop()


_interrupted: list[int] = []


class _QuietInterruptedTrial(logging.Filter):
    """Optuna logs an interrupted trial with its traceback; the CLI prints one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _interrupted


@contextmanager
def raising_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` (main thread only), once.

    Later signals are ignored while the worker marks its trial and exits, so a Ctrl-C that
    reaches both ``run`` and its worker processes is handled once.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        _interrupted.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("optuna.study._optimize")
    quiet = _QuietInterruptedTrial()
    log.addFilter(quiet)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        log.removeFilter(quiet)
        _interrupted.clear()


def _load(storage: Any, name: str, url: StorageURL) -> StudySpec:
    """The spec stored with study ``name``; refuses a missing study or one without a spec."""
    import difflib

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyNotFoundError(
            f"no study named {name!r} in {url.masked}{hint}; "
            f"studies there: {', '.join(names) or 'none'}."
        ) from None
    spec = stored_spec(name, storage.get_study_user_attrs(study_id))
    if spec is None:
        raise SpecError(
            f"study {name!r} in {url.masked} has no stored spec (it was not created by studyhall); "
            "create it with `studyhall run SPEC` first."
        )
    return spec


def _require(spec: StudySpec) -> None:
    """Raise ``DataError`` when what every trial of ``spec`` needs from outside it is missing
    (``ObjectiveInfo.require``: MNIST's local cache): ``run_study`` calls it before it writes
    the study, ``_work`` before its first trial (an in-process run checks twice: one stat)."""
    info = get_objective(spec.objective.name)
    if info.require is not None:
        info.require(spec.objective.options)


def _locked_counts(study: Any, lock: Any) -> dict[str, int]:
    """Take ``lock``, then count the study's trials by state (the lock stays held)."""
    from studyhall.storage._tally import tally_trials

    lock.acquire()
    try:
        # Counted by the database (one query), not by loading every trial of the study.
        return tally_trials(study._storage, study._study_id).counts
    except BaseException:
        lock.release()
        raise


def _admit(study: Any, target: int | None, lock: Any, heartbeat: bool) -> str:
    """``go`` (lock held until the trial exists), ``wait`` or ``done``."""
    from optuna.storages import fail_stale_trials

    if target is None:
        return "go"
    counts = _locked_counts(study, lock)
    running = counts["RUNNING"]
    finished = counts["COMPLETE"] + counts["PRUNED"]
    if finished + running < target:
        return "go"
    if finished >= target or not heartbeat:
        lock.release()
        return "done"
    try:  # under the lock, as the stale watch does: no new trial starts between fail and queue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" since Optuna 2.9
            fail_stale_trials(study)  # a dead worker's trial is failed and queued again here
    finally:
        lock.release()
    return "wait"


def _recount(study: Any, target: int, lock: Any) -> None:
    """After the admission lock was lost under a new trial (its connection dropped, or it
    expired), count again under the lock and raise ``_Surplus`` if the study is a trial over.

    Another worker may have been admitted in the gap, and both filled the same last place (a
    study of 8 ended with 9 while its sessions were being killed). This worker checks only
    once the rival's trial exists: the rival held the lock until then. On a surplus the lock
    stays held until the FAIL is written (``_loop`` releases it), so a third worker that lost
    its lock too cannot count this trial as running and drop its own as well.
    """
    while True:
        counts = _locked_counts(study, lock)
        if counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] > target:
            raise _Surplus(
                f"{_SURPLUS}: this worker's admission lock was lost as the trial started, and "
                f"another worker took the study's last place (of {target}); dropped before it ran"
            )
        if lock.release():
            return


@contextmanager
def _every(interval: float, enabled: bool, name: str, tick: Callable[[], None],
           skipped: str) -> Iterator[None]:
    """While inside, run ``tick`` in a daemon thread every ``interval`` seconds; an error is
    logged as ``skipped`` and the next tick tries again (the thread never ends early)."""
    if not enabled:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                tick()
            except Exception as exc:
                _logger.debug("%s: %s", skipped, exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def _stale_watch(study: Any, interval: float, enabled: bool,
                 lock: Any) -> AbstractContextManager[None]:
    """While this worker runs, fail other workers' dead trials every heartbeat ``interval``.

    Optuna looks for stale trials only when a worker starts a trial (and not at all inside
    ``own_heartbeats``), so a dead worker's trial would wait for the end of every live worker's
    current trial (minutes, for a Keras trial); this thread makes the retry start within
    ``grace + interval`` of the death instead.

    It holds ``lock`` (an admission lock of its own) from failing a trial to queueing its copy:
    an admission between the two saw one trial missing and no copy waiting, started a new trial
    instead of the retry, and left the copy WAITING in a finished study (1 run in 25 here). An
    error (an outage) skips one check: the main loop waits it out.
    """
    from optuna.storages import fail_stale_trials

    def watch() -> None:
        lock.acquire()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" since Optuna 2.9
                fail_stale_trials(study)
        finally:
            lock.release()

    return _every(interval, enabled, "studyhall-stale-watch", watch, "stale-trial check skipped")


def _beating(study: Any, func: _TrialFunction, interval: float,
             enabled: bool) -> AbstractContextManager[None]:
    """While this worker runs, record the heartbeat of its current trial every ``interval``.

    One thread for the worker's life, instead of Optuna's thread per trial that beats as the
    trial starts: a trial shorter than ``interval`` (most breast-cancer trials) writes no
    heartbeat at all, and a longer one its first within ``interval`` of its start, as often
    as Optuna's after that. A beat that lands as the trial ends is harmless (stale checks read
    RUNNING trials only).
    """
    storage = study._storage

    def beat() -> None:
        trial = func.current
        if trial is not None:
            storage.record_heartbeat(trial._trial_id)  # the storages log their own failures

    return _every(interval, enabled, "studyhall-heartbeat", beat, "heartbeat not recorded")


def _requeue(study: Any, trial: Any, max_retry: int | None) -> str:
    """After an interrupt: make sure ``trial`` is FAIL and queue its copy; say what was done."""
    from optuna.trial import TrialState

    frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state == TrialState.RUNNING:
        study.tell(trial, state=TrialState.FAIL)
        frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state != TrialState.FAIL:
        return f"trial {frozen.number} had finished ({frozen.state.name.lower()})"
    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    retry_callback(max_retry)(study, frozen)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) > before
    return f"trial {frozen.number} marked FAIL" + (" and queued again" if queued else "")


@contextmanager
def _starting() -> Iterator[None]:
    """No cyclic garbage collection from here until this thread's worker freezes the heap.

    A run's start (the spec, the database and Optuna's schema, Keras and JAX) makes hundreds of
    thousands of long-lived objects and next to no garbage, and the collections it triggered
    walked them: 2 full and ~190 young ones in a one-trial ``run_study``, which took 1.70-1.94 s
    here with them and 1.10-1.51 s without (A/B, 5 runs each). ``_frozen_heap`` freezes them
    uncollected and turns the collector back on for the trials; a start that fails turns it
    back on here. A no-op where the collector is off already (the caller's choice, or another
    thread starting).
    """
    if not gc.isenabled() or getattr(_pause, "on", False):
        yield
        return
    gc.disable()
    _pause.on = True
    try:
        yield
    finally:
        _resume_collector()


def _resume_collector() -> None:
    if getattr(_pause, "on", False):
        _pause.on = False
        gc.enable()


_pause = threading.local()  # whether this thread's ``_starting`` turned the collector off


@_starting()
def _work(
    name: str,
    url: StorageURL,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    worker: int | None = None,
    heartbeat: Heartbeat | None = None,
    storage: Any = None,
    on_trial: Callable[[Any, Any], None] | None = None,
) -> None:
    """One worker's loop (see the module docstring); ``n_trials`` is the study's total."""
    import optuna

    from studyhall.storage._cache import trial_cache
    from studyhall.storage._tally import tally_trials

    heartbeat = heartbeat or Heartbeat.resolve()
    storage = (
        storage if storage is not None else open_storage(url, heartbeat=heartbeat, must_exist=True)
    )
    spec = _load(storage, name, url)
    _require(spec)
    target = spec.budget if n_trials is None else spec.with_overrides(n_trials=n_trials).budget
    timeout = spec.timeout if timeout is None else timeout
    study_id = storage.get_study_id_from_name(name)
    if spec.sampler.name == "grid":
        # The grid's order is a shuffle by the seed: every worker and every resumed run must
        # agree on it, or trial numbers map to different points and the grid repeats some.
        seed = spec.seed
    else:
        # The study's size, counted in SQL rather than by loading every trial.
        size = sum(tally_trials(storage, study_id).counts.values())
        seed = _sampler_seed(spec.seed or 0, size, worker)
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, seed=seed, grid=spec.grid)
    study = optuna.load_study(
        study_name=name,
        storage=trial_cache(storage),  # Optuna's cache, minus a sync before every trial
        sampler=sampler,
        pruner=build_pruner(spec.pruner.name, spec.pruner.options),
    )
    beating = bool(getattr(study._storage, "get_heartbeat_interval", lambda: None)())
    lock = admission_lock(storage, url, name, heartbeat.grace)

    def admitted() -> None:
        if not lock.release() and target is not None:
            _recount(study, target, lock)

    func = _TrialFunction(spec, on_start=admitted, url=url, storage=storage)
    callbacks: list[Callable[[Any, Any], None]] = [_FailureStreak()] + (
        [on_trial] if on_trial else []
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    _logger.info("worker joined study %s on %s (target %s trials)", name, url.masked, target)
    watch_lock = admission_lock(storage, url, name, heartbeat.grace)  # the thread's own
    with _stale_watch(study, heartbeat.interval, beating, watch_lock), \
            _beating(study, func, heartbeat.interval, beating), _frozen_heap():
        _loop(study, func, target, lock, beating, heartbeat, callbacks, deadline, url)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects alive before the first trial (Keras, JAX, the data: ~336,000) out of
    every garbage collection while the worker runs.

    A full collection walked all of them: 0.22 s each, 6-7 in 150 breast-cancer trials, 6% of
    a worker's time; 0.03 s frozen (measured here). They live as long as the worker anyway; at
    its end they are handed back to the collector, so a caller's own cyclic garbage from before
    the run is freed then, not lost. Nested and concurrent uses share one freeze. Unless the
    start ran without collections (``_starting``), the young generations are collected first: a
    full collection right after Keras' import freed 23 objects in 0.14 s, paid again by every
    ``run_study`` of a process that resumes its study.
    """
    global _freezes
    with _freeze_lock:
        if _freezes == 0:
            if not getattr(_pause, "on", False):
                gc.collect(1)
            gc.freeze()
        _freezes += 1
    _resume_collector()
    try:
        yield
    finally:
        with _freeze_lock:
            _freezes -= 1
            if _freezes == 0:
                gc.unfreeze()


_freezes = 0
_freeze_lock = threading.Lock()


def _loop(study: Any, func: _TrialFunction, target: int | None, lock: Any, beating: bool,
          heartbeat: Heartbeat, callbacks: list[Callable[[Any, Any], None]],
          deadline: float | None, url: StorageURL) -> None:
    outage: float | None = None
    waiting_logged = False
    while deadline is None or time.monotonic() < deadline:
        func.current = None
        if _interrupted:
            # The handler's exception was swallowed (raised inside a garbage-collection
            # callback, which Python only prints): the trial ended normally; stop now.
            raise Interrupted(_interrupted[0])
        try:
            decision = _admit(study, target, lock, beating)
            if decision == "done":
                break
            if decision == "wait":
                if not waiting_logged:
                    _logger.info(
                        "the study's last trials are running in other workers; waiting for "
                        "them (a dead worker's trial is retried after the %d s grace period)",
                        heartbeat.grace,
                    )
                    waiting_logged = True
                time.sleep(POLL_S)
                continue
            try:
                with own_heartbeats():  # ``_beating``'s thread and ``_stale_watch`` do them
                    study.optimize(func, n_trials=1, callbacks=callbacks, catch=(_TrialFailed,))
                func.current = None  # over: nothing to beat (an interrupted one is requeued)
            finally:
                lock.release()
            outage = None
        except Interrupted as exc:
            lock.release()
            if func.current is not None:
                try:
                    exc.detail = _requeue(study, func.current, heartbeat.max_retry)
                except Exception as err:  # the storage is away: the heartbeat check recovers it
                    exc.detail = f"trial {func.current.number} left to the heartbeat check ({err})"
            raise
        except Exception as exc:
            lock.release()
            if not is_transient(exc):
                raise
            outage = outage or time.monotonic()
            waited = time.monotonic() - outage
            if waited > OUTAGE_S:
                raise StorageError(
                    f"storage {url.masked} unreachable for {waited:.0f} s: {exc}"
                ) from exc
            delay = min(2 ** min(int(waited), 4) * 0.5, 8.0)
            _logger.warning(
                "storage %s unreachable (%s); retrying in %.1f s",
                url.masked,
                " ".join(str(exc).split())[:200],
                delay,
            )
            time.sleep(delay)
            continue
        if getattr(study, "_stop_flag", False):  # a failure streak, or a grid sampler that is done
            break


def _check_count(key: str, value: Any, low: int = 1) -> None:
    """Refuse an argument ``key`` that is given but is not an integer of at least ``low``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < low):
        allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise SpecError(f"`{key}` must be {allowed}; got {value!r}.")


def _check_seconds(key: str, value: Any) -> None:
    """Refuse an argument ``key`` that is given but is not a positive number of seconds."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not value > 0):
        raise SpecError(f"`{key}` must be a positive number of seconds; got {value!r}.")


def join_study(
    name: str,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    heartbeat: Heartbeat | None = None,
    threads: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> StudyHandle:
    """Work on an existing study, from any machine, with the spec stored with it.

    Args:
        name: the study's name.
        storage: its storage URL (default ``sqlite:///studyhall.db``).
        n_trials: finished trials the study should hold (default: its stored budget).
        timeout: seconds this worker may run (default: the stored spec's).
        heartbeat: heartbeat settings (default: ``Heartbeat.resolve()``, 10 s / 30 s).
        threads: cap on this process's CPU threads (set before Keras is first imported).
        on_progress: called after each trial this worker finishes.

    Returns:
        A handle on the study.

    Raises:
        StudyNotFoundError: no such study. SpecError: it has no stored spec, or bad arguments.
        StorageError: the storage cannot be reached (or stays away for ``OUTAGE_S``).
        Interrupted: SIGINT/SIGTERM arrived (under ``raising_signals``); the trial was failed
            and queued again.

    Example:
        >>> studyhall.join_study("beale-tpe", "postgresql://me@db/studies")  # doctest: +SKIP
    """
    import optuna

    _check_count("n_trials", n_trials)
    _check_count("threads", threads)
    _check_seconds("timeout", timeout)
    if threads is not None:
        limit_threads(threads)
    url = parse_url(storage)
    if url.backend == "sqlite" and url.path is None:
        raise SpecError(
            "a worker cannot join an in-memory SQLite database; give a file or server URL."
        )
    heartbeat = heartbeat or Heartbeat.resolve()
    with _starting():
        work_storage = open_storage(url, heartbeat=heartbeat, must_exist=True)
        spec = _load(work_storage, name, url)
        study_id = work_storage.get_study_id_from_name(name)
        target = spec.budget if n_trials is None else spec.with_overrides(n_trials=n_trials).budget

        def on_trial(_study: Any, _trial: Any) -> None:
            if on_progress is not None:
                on_progress(poll(work_storage, study_id, target))

        _work(name, url, n_trials=n_trials, timeout=timeout, heartbeat=heartbeat,
              storage=work_storage, on_trial=on_trial)
    return StudyHandle(optuna.load_study(study_name=name, storage=work_storage), url)
