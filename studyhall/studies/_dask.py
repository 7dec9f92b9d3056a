"""Workers as tasks on a Dask cluster: ``studyhall run SPEC --dask SCHEDULER_ADDRESS``.

Dask only places the workers; each task runs the same loop as ``studyhall worker`` (``_work``),
against the same storage, which every Dask worker must reach (a database server, or a file
on a file system they share). By default one task goes to each Dask worker (process); give
``--workers N`` for another count (tasks that share a process then share it as threads, which
suits light objectives, not Keras ones: start Dask workers with ``--nthreads 1`` for those).

Ctrl-C/SIGTERM on ``run`` sets a Dask ``Event``; each task's watcher thread then raises
``Interrupted`` inside its task, as a signal would in a worker process, so the running trial
is marked FAIL and queued again and the task ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from studyhall.errors import Interrupted, SpecError, StudyhallError
from studyhall.storage import Heartbeat, StorageURL, is_transient

__all__ = ["check_dask", "connect", "run_on_dask"]

_logger = logging.getLogger(__name__)

CONNECT_S = 10.0
"""How long ``run --dask`` waits for the scheduler to answer."""
STOP_WAIT_S = 60.0
"""How long ``run --dask`` waits for its tasks to mark their trials after a Ctrl-C."""


def check_dask() -> None:
    """Refuse early (before anything is written) when dask.distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SpecError(
            "--dask needs dask.distributed, which is not installed; "
            "pip install 'studyhall[dask]'."
        ) from None


def _host_port(address: str) -> tuple[str, str, int]:
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(
            f"--dask address {address!r} must be [tcp://]HOST:PORT, the address a Dask "
            "scheduler prints (e.g. tcp://10.0.0.5:8786)."
        )
    return scheme, host.strip("[]"), int(port)


def connect(address: str, timeout: float | None = None) -> Any:
    """A ``distributed.Client`` on ``address``; ``SpecError`` (one line) if nothing answers."""
    check_dask()
    timeout = CONNECT_S if timeout is None else timeout
    scheme, host, port = _host_port(address)
    try:  # a plain TCP probe first: a refused port fails at once, without Dask's retries
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError(
            f"no Dask scheduler answers at {scheme}://{host}:{port} ({reason}); start one "
            "(`dask scheduler`) or fix the --dask address."
        ) from None
    from distributed import Client

    try:
        return Client(f"{scheme}://{host}:{port}", timeout=timeout, set_as_default=False)
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"no Dask scheduler answers at {scheme}://{host}:{port} in {timeout:.0f} s "
            f"({' '.join(str(exc).split())[:200]}); fix the --dask address."
        ) from None


def _async_raise(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


class _DaskStop(Interrupted):
    """Raised inside a task when ``run --dask`` was interrupted (reads as SIGTERM)."""

    def __init__(self, signum: int = 15, detail: str = "") -> None:
        super().__init__(signum, detail)


def _task(name: str, url: str, timeout: float | None, index: int, threads: int,
          heartbeat: Heartbeat, stop_event: str, log_level: int) -> str:
    """One studyhall worker inside a Dask task; returns ``ok`` or a one-line error."""
    import optuna
    from distributed import Event, get_client

    from studyhall.storage import parse_url
    from studyhall.studies.worker import _work, limit_threads

    limit_threads(threads)
    logging.getLogger("studyhall").setLevel(log_level)
    optuna.logging.set_verbosity(log_level)
    event = Event(stop_event, client=get_client())  # the watcher thread has no client of its own
    me = threading.get_ident()
    guard = threading.Lock()
    state = {"working": True}

    def watch() -> None:
        while True:
            with guard:
                if not state["working"]:
                    return
            try:
                if not event.wait(timeout=1):
                    continue
            except Exception:  # the client went away: keep working; the study is in storage
                time.sleep(1)
                continue
            with guard:
                if state["working"]:
                    _async_raise(me, _DaskStop)
                return

    watcher = threading.Thread(target=watch, name=f"studyhall-dask-stop-{index}", daemon=True)
    watcher.start()
    try:
        try:
            _work(name, parse_url(url), worker=index, timeout=timeout, heartbeat=heartbeat)
        finally:
            with guard:
                state["working"] = False
        return "ok"
    except Interrupted as exc:
        return f"interrupted: {exc}"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def _portable(url: StorageURL) -> str:
    # A file URL must name the same file on every Dask worker: make it absolute.
    if url.path is None or os.path.isabs(url.path):
        return url.url
    prefix = "sqlite:///" if url.backend == "sqlite" else "journal://"
    return prefix + os.path.abspath(url.path)


def run_on_dask(client: Any, name: str, url: StorageURL, timeout: float | None,
                workers: int | None, heartbeat: Heartbeat, report: Callable[[], bool]) -> None:
    """Run ``workers`` (default: one per Dask worker) studyhall workers as Dask tasks."""
    from distributed import Event

    info = client.scheduler_info(n_workers=-1)["workers"]
    addresses = sorted(info)
    if not addresses:
        raise SpecError(
            f"the Dask scheduler at {client.scheduler.address} has no workers; start some "
            "(`dask worker ADDRESS --nthreads 1`)."
        )
    n = workers or len(addresses)
    placed = [addresses[i % len(addresses)] for i in range(n)]
    stop_event = f"studyhall-stop-{uuid.uuid4().hex}"
    Event(stop_event, client=client)  # created here, so the tasks find it
    level = logging.getLogger("studyhall").getEffectiveLevel()
    futures = []
    for i, address in enumerate(placed):
        threads = max(1, int(info[address].get("nthreads", 1)) // placed.count(address))
        futures.append(client.submit(
            _task, name, _portable(url), timeout, i, threads, heartbeat, stop_event, level,
            workers=[address], allow_other_workers=True, pure=False, key=f"studyhall-{name}-{i}-"
            f"{uuid.uuid4().hex[:8]}",
        ))
    _logger.info("%d studyhall worker(s) submitted to the Dask scheduler at %s", n,
                 client.scheduler.address)
    try:
        while not all(f.done() for f in futures):
            try:
                report()
            except Exception as exc:
                if not is_transient(exc):
                    raise
            time.sleep(0.5)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        Event(stop_event, client=client).set()
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            time.sleep(0.2)
        stopped = sum(f.done() and f.status == "finished" and f.result().startswith("interrupted")
                      for f in futures)
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if not f.done()])
        raise Interrupted(signum, f"{stopped} Dask task(s) stopped, their running trials marked "
                          "FAIL and queued again") from None
    results = []
    for f in futures:
        try:
            results.append(f.result())
        except Exception as exc:  # the task died with its Dask worker
            results.append(f"error: {type(exc).__name__}: {exc}")
    done = report()
    failed = [r for r in results if r != "ok"]
    if failed:
        if done:
            _logger.warning("%d of %d Dask tasks failed (%s); the study still holds its budget",
                            len(failed), n, failed[0])
            return
        raise StudyhallError(f"{len(failed)} of {n} Dask tasks failed; first: {failed[0]}")
