"""Run one slow step of a report in a forked child process while the parent does the rest.

fANOVA importances cost a report 4-5 s whatever the study's size: importing scikit-learn (SciPy's
stats, 2-3 s) and fitting and marginalising its forest (~2 s), all of it one core's work. The
rest of the report needs neither, so on a machine with a second core a child forked when the
report starts imports scikit-learn while the parent loads the trials, ranks the ones the parent
hands it while the parent draws the other figures, and the report takes the longer of the two
paths instead of their sum. The child never touches the database (it is handed plain trials),
and its result is the one an in-process call gives (same trials, same seed). Where fork is
unavailable (Windows) or unsafe (macOS, a process with other threads, JAX or TensorFlow
loaded), or with one core, the step runs in-process when its result is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Background"]

_logger = logging.getLogger(__name__)


# Frameworks that start native threads, which ``threading`` does not count (a notebook that
# trained a network, then writes a report).
_THREADED = ("jax", "tensorflow", "torch")


def _can_fork() -> bool:
    # Forking a process with other threads can leave the child waiting for ever on a lock
    # one of them held (Python 3.12 and JAX warn about it): then the step runs in-process.
    return (sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1
            and threading.active_count() == 1
            and not any(name in sys.modules for name in _THREADED))


def _child(inbox: Any, conn: Any, fn: Callable[..., Any],
           warm: Callable[[], None] | None) -> None:
    if warm is not None:
        with contextlib.suppress(Exception):  # ``fn`` meets the same error and reports it
            warm()
    try:
        args = inbox.recv()
    except EOFError:  # the parent needs no answer after all
        return
    try:
        answer: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:  # handed to the parent, which raises it
        answer = (False, exc)
    try:
        conn.send(answer)
    except Exception as exc:  # an exception that does not pickle
        conn.send((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]} ({exc})")))
    conn.close()


class Background:
    """``fn(*args)`` in a child process forked now (which runs ``warm()`` at once, while it
    waits for ``submit(*args)``); ``result()`` waits for the answer.

    An exception ``fn`` raises is raised by ``result()``, as if it had run in-process. Use it as
    a context manager, so that a report that fails half-way does not leave the child running.

    Example:
        >>> with Background(sum) as job:
        ...     job.submit([1, 2, 3])
        ...     job.result()
        6
    """

    def __init__(self, fn: Callable[..., Any], *, warm: Callable[[], None] | None = None,
                 fork: bool = True) -> None:
        self._fn = fn
        self._args: tuple[Any, ...] | None = None
        self._proc: Any = None
        self._conn: Any = None  # the child's answer
        self._outbox: Any = None  # ``fn``'s arguments
        if not (fork and _can_fork()):
            return
        import multiprocessing

        context = multiprocessing.get_context("fork")
        inbox, self._outbox = context.Pipe(duplex=False)
        self._conn, answer = context.Pipe(duplex=False)
        try:
            self._proc = context.Process(target=_child, args=(inbox, answer, fn, warm),
                                         daemon=True)
            self._proc.start()
        except OSError as exc:  # no process to spare: run it in-process later
            _logger.debug("cannot fork for %s (%s); running it in-process", fn.__name__, exc)
            self._proc = None
            self._conn.close()
            self._outbox.close()
        finally:
            inbox.close()  # the child holds its own copies: EOF here when the child is gone
            answer.close()

    def submit(self, *args: Any) -> None:
        """Hand ``fn`` its arguments (once)."""
        self._args = args
        if self._proc is not None:
            # From a thread: a pipe holds 64 KiB, and the child reads only after ``warm()``.
            threading.Thread(target=self._send, args=(args,), daemon=True).start()

    def _send(self, args: tuple[Any, ...]) -> None:
        # If the child is gone, ``result`` finds out and runs ``fn`` here.
        with contextlib.suppress(OSError, ValueError):
            self._outbox.send(args)

    def result(self) -> Any:
        """``fn``'s return value (raises what ``fn`` raised)."""
        if self._args is None:
            raise RuntimeError("Background.result() before submit()")
        if self._proc is not None:
            try:
                ok, value = self._conn.recv()
            except EOFError:  # the child died (killed, out of memory): run it here
                _logger.debug("the child running %s died; running it in-process",
                              self._fn.__name__)
            else:
                self._proc.join(timeout=5.0)  # it has answered: let it exit
                if not ok:
                    raise value
                return value
            finally:
                self.close()
        return self._fn(*self._args)

    def close(self) -> None:
        """Stop the child if it still runs."""
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc.join()
            self._conn.close()
            self._outbox.close()
            self._proc = None

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
