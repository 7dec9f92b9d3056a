"""Running studies: create or resume one, then work on it in this process or in N workers.

The budget counts the study's finished trials (complete + pruned) across every run and worker,
so a resumed study continues where it stopped instead of starting from zero. Every worker, here
or in a child process, runs the same loop (``worker.py``), the one ``studyhall worker`` runs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from studyhall.errors import Interrupted, SpecError, StudyhallError
from studyhall.storage import Heartbeat, StorageURL, is_transient, open_storage, parse_url
from studyhall.storage._tally import tally_trials
from studyhall.studies._progress import Progress, poll
from studyhall.studies.results import SPEC_ATTR, StudyHandle, stored_spec
from studyhall.studies.spec import StudySpec, load_spec
from studyhall.studies.worker import (
    _require,
    _starting,
    _work,
    limit_threads,
    raising_signals,
    trial_seed,
)

__all__ = ["Progress", "run_study", "trial_seed"]

_logger = logging.getLogger(__name__)

STOP_WAIT_S = 60.0
"""How long ``run`` waits for its workers to mark their trials after forwarding a signal."""


def _prepare(spec: StudySpec, storage: Any, url: StorageURL) -> tuple[StudySpec, int]:
    """Create the study or check it matches; store the spec; return it and the finished count."""
    import optuna

    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        study_id = None
    if study_id is not None:
        old = stored_spec(spec.name, storage.get_study_user_attrs(study_id))
        if old is None:
            raise SpecError(
                f"study {spec.name!r} in {url.masked} was not created by studyhall (it has no "
                "stored spec); pick another `name`."
            )
        if old.search_signature() != spec.search_signature():
            diff = [k for k in ("objective", "space", "directions")
                    if old.search_signature()[k] != spec.search_signature()[k]]
            raise SpecError(
                f"study {spec.name!r} in {url.masked} was created with a different "
                f"{' and '.join(diff)} than {spec.source} gives; use a new `name`, or the "
                f"original spec (studyhall show {spec.name} prints it)."
            )
        if spec.seed is None:
            spec = spec.with_seed(old.seed if old.seed is not None else 0)
    elif spec.seed is None:
        spec = spec.with_seed(random.SystemRandom().randrange(2**31))
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        directions=[optuna.study.StudyDirection[d.upper()] for d in spec.directions],
        load_if_exists=True,
    )
    # The latest run's budget, sampler and pruner become the study's: workers joining later
    # by name follow them.
    stored = spec.to_dict()
    if "storage" in stored:  # the password stays out of the database
        stored["storage"] = parse_url(stored["storage"]).masked
    study.set_user_attr(SPEC_ATTR, stored)
    # Counted, not loaded: at 10,000 trials a load costs a second before any worker starts.
    done = tally_trials(study._storage, study._study_id).counts
    return spec, done["COMPLETE"] + done["PRUNED"]


def _worker_process(name: str, url: str, timeout: float | None, worker: int, threads: int,
                    log_level: int, heartbeat: Heartbeat) -> None:
    """A child of ``run --workers N``: the same loop as ``studyhall worker``."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where is it?
    limit_threads(threads)
    logging.basicConfig(level=log_level, format=f"[worker {worker}] %(levelname)s %(message)s")
    import optuna

    optuna.logging.set_verbosity(log_level)
    with raising_signals():
        try:
            _work(name, parse_url(url), worker=worker, timeout=timeout, heartbeat=heartbeat)
        except Interrupted as exc:
            _logger.info("worker %d: %s", worker, exc)
            sys.exit(exc.exit_code)


def run_study(
    spec: StudySpec | str | Mapping[str, Any],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    seed: int | None = None,
    workers: int | None = 1,
    heartbeat: Heartbeat | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    dask: str | None = None,
) -> StudyHandle:
    """Create (or resume) a study and run it until it holds its budget of finished trials.

    Args:
        spec: a ``StudySpec``, a YAML path, a preset name or a dict.
        n_trials: total finished trials the study should hold (overrides the spec).
        timeout: seconds this run may take (overrides the spec).
        storage: storage URL (overrides the spec; default ``sqlite:///studyhall.db``).
        seed: study seed (overrides the spec).
        workers: worker processes; 1 runs in this process. With ``dask``: tasks on the
            cluster (``None``: one per Dask worker). 0: only store (queue) the study, for the
            serving workers of ``serve_studies`` (``studyhall serve``) to run.
        heartbeat: heartbeat settings (default ``Heartbeat.resolve()``: 10 s, grace 30 s).
        on_progress: called after each finished trial (or poll, with several workers).
        dask: a Dask scheduler address (``tcp://host:8786``): run the workers as tasks on
            that cluster (needs ``pip install 'studyhall[dask]'``).

    Returns:
        A handle on the study, for its best trial and trials table.

    Raises:
        SpecError: a malformed spec, or one that does not match the stored study.
        DataError: a data set the objective trains on is not cached; nothing was written.
        StorageError: the storage cannot be reached.
        StudyhallError: a worker process failed.
        Interrupted: SIGINT/SIGTERM (see ``raising_signals``); workers were stopped first.

    Example:
        >>> handle = run_study("beale-tpe", n_trials=20,
        ...                    storage="sqlite:///:memory:")  # doctest: +SKIP
    """
    overrides = {"n_trials": n_trials, "timeout": timeout, "storage": storage, "seed": seed}
    spec = load_spec(spec, overrides=overrides)
    if workers is None and dask is None:
        workers = 1
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
    ):
        raise SpecError(f"`workers` must be a whole number of processes; got {workers!r}.")
    url = parse_url(spec.storage, source=spec.source)
    if workers == 0:
        _check_queueable(spec, url, dask)
    if (dask is not None or (workers or 1) > 1) and url.backend == "sqlite" and url.path is None:
        raise SpecError(
            f"{'Dask tasks' if dask is not None else 'several workers'} cannot share an "
            "in-memory SQLite database; give a file URL."
        )
    if workers != 0:  # a queued study's data must be where it is served, not here
        _require(spec)  # a missing data set: one line, and no study holding a failed trial
    heartbeat = heartbeat or Heartbeat.resolve()
    client = None
    if dask is not None:  # reach the cluster before anything is written
        from studyhall.studies._dask import connect

        client = connect(dask)
    try:
        return _run(spec, url, workers, heartbeat, on_progress, client)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _run(spec: StudySpec, url: StorageURL, workers: int | None, heartbeat: Heartbeat,
         on_progress: Callable[[Progress], None] | None, client: Any) -> StudyHandle:
    import optuna

    # One worker in this process works on the handle's own storage (an in-memory database
    # lives in that object only), not on a second connection pool with its own schema check,
    # and the whole start runs without collections until it freezes the heap (``_starting``).
    in_process = client is None and workers == 1
    with _starting() if in_process else contextlib.nullcontext():
        handle_storage = open_storage(url, heartbeat=heartbeat if in_process else None)
        spec, finished = _prepare(spec, handle_storage, url)
        budget = spec.budget
        remaining = None if budget is None else max(0, budget - finished)

        handle = StudyHandle(optuna.load_study(study_name=spec.name, storage=handle_storage), url)
        if remaining == 0:
            _logger.info("study %s already holds %d finished trials; nothing to do",
                         spec.name, finished)
            return handle
        if workers == 0:
            _logger.info("queued study %s on %s: %s trials to go, for `studyhall serve`",
                         spec.name, url.masked, remaining)
            return handle
        _logger.info(
            "running study %s on %s: %s trials to go, %s worker(s)",
            spec.name, url.masked, remaining if remaining is not None else "timeout-bound",
            workers or "Dask",
        )
        study_id = handle_storage.get_study_id_from_name(spec.name)

        def report() -> bool:
            progress = poll(handle_storage, study_id, budget)
            if on_progress is not None:
                on_progress(progress)
            return budget is not None and progress.finished >= budget

        if client is not None:
            from studyhall.studies._dask import run_on_dask

            tasks = workers and min(workers, remaining or workers)
            run_on_dask(client, spec.name, url, spec.timeout, tasks, heartbeat, report)
        elif in_process:
            def on_trial(_study: Any, _trial: Any) -> None:
                report()

            _work(spec.name, url, worker=0, timeout=spec.timeout, heartbeat=heartbeat,
                  storage=handle_storage, on_trial=on_trial)
        else:
            assert workers is not None
            _run_workers(spec, url, min(workers, remaining or workers), heartbeat, report)
        return handle


def _check_queueable(spec: StudySpec, url: StorageURL, dask: str | None) -> None:
    """Refuse a queued study no serving worker could take, before anything is written."""
    if dask is not None:
        raise SpecError("`workers` 0 queues the study for `studyhall serve`; it takes no `dask`.")
    if url.backend == "sqlite" and url.path is None:
        raise SpecError("a study queued in an in-memory SQLite database is seen by no serving "
                        "worker; give a file or server URL.")
    if spec.budget is None:
        raise SpecError(f"study {spec.name!r} from {spec.source} has no trial budget: a serving "
                        "worker runs a queued study until it holds `n_trials`; set it.")


def _run_workers(spec: StudySpec, url: StorageURL, workers: int, heartbeat: Heartbeat,
                 report: Callable[[], bool]) -> None:
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    level = logging.getLogger("studyhall").getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(spec.name, url.url, spec.timeout, i, threads, level, heartbeat),
            name=f"studyhall-worker-{i}",
        )
        for i in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            try:
                report()
            except Exception as exc:  # the workers wait out an outage; so does the progress bar
                if not is_transient(exc):
                    raise
                _logger.debug("progress not read: %s", exc)
            time.sleep(0.5)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        stopped = _stop(procs, signum)
        raise Interrupted(signum, f"{stopped} worker(s) stopped, their running trials marked FAIL "
                          "and queued again") from None
    finally:
        for p in procs:  # only reached alive after an unexpected error here
            if p.is_alive():
                p.terminate()
            if p.pid is not None:  # started
                p.join()
    done = report()
    failed = [p for p in procs if p.exitcode != 0]
    if failed:
        codes = ", ".join(f"{p.name} exited with {p.exitcode}" for p in failed)
        if done:  # the others retried its trial: the study is whole
            _logger.warning("%d of %d workers died (%s); the study still holds its budget",
                            len(failed), len(procs), codes)
            return
        raise StudyhallError(
            f"{len(failed)} of {len(procs)} workers failed ({codes}); see their log above."
        )


def _stop(procs: list[Any], signum: int) -> int:
    """Forward ``signum`` to the workers, wait for them to mark their trials; count them."""
    _logger.info("forwarding %s to %d worker(s)", signal.Signals(signum).name, len(procs))
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signum)
    deadline = time.monotonic() + STOP_WAIT_S
    for p in procs:
        if p.pid is None:  # interrupted before it started
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():  # stuck: its trial will be recovered by the heartbeat check
            _logger.warning("%s did not stop in %.0f s; killing it", p.name, STOP_WAIT_S)
            p.kill()
            p.join()
    return sum(p.exitcode == 128 + signum for p in procs)
