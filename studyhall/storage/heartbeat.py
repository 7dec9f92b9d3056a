"""Heartbeats: how a study notices that a worker died in the middle of a trial.

While a worker runs a trial, a thread of the worker's records the trial's heartbeat every
``interval`` seconds. Every worker, every ``interval`` seconds and while it waits for the
study's last trials, fails every RUNNING trial whose last heartbeat is older than ``grace``
seconds, and queues a copy of it (same parameters, same seed) as a WAITING trial, which the next
free worker runs. Optuna's own ``RetryHeartbeatStaleTrialCallback`` does the queueing and keeps
the link to the original trial in the copy's system attributes (``failed_trial``,
``retry_history``).

A trial without any heartbeat is judged too, once a checker has seen it so for the grace period
(``NeverBeaten``): a worker's thread beats its trial within ``interval`` of its start, so only a
worker lost in that time (killed, or the database away) leaves one; Optuna, which skips trials
without a heartbeat, would leave it RUNNING for ever, and the workers waiting for the study's
last trial would wait for ever. Optuna itself starts a thread per trial that beats at once, and
looks for stale trials before every trial: a 30-epoch breast-cancer trial lasts 30 ms here, and
a worker without those runs 17% more of them a second (A/B, 4 rounds; ``own_heartbeats``).

Defaults (10 s / 30 s, at most 3 retries of one trial) come from the environment variables
``STUDYHALL_HEARTBEAT``, ``STUDYHALL_GRACE`` and ``STUDYHALL_MAX_RETRY`` when set.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from studyhall.errors import SpecError

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RETRY",
    "Heartbeat",
    "NeverBeaten",
    "optuna_beats",
    "own_heartbeats",
    "retry_callback",
]

DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_S = 30
DEFAULT_MAX_RETRY = 3

_KEEP_USER_ATTRS = ("seed",)
"""User attributes a retried trial inherits; the rest (reasons, results) belong to the attempt."""


def _positive(name: str, value: Any, source: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise SpecError(
            f"`{name}` from {source} must be a positive whole number of seconds; got {value!r}."
        )
    return number


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat settings for a storage.

    Attributes:
        interval: seconds between two heartbeats of a running trial.
        grace: seconds without a heartbeat after which a running trial counts as dead; longer
            than ``interval``, and long enough to ride out a database restart.
        max_retry: how often one trial is re-queued after its worker died (``None``: always).

    Example:
        >>> Heartbeat(interval=2, grace=6).grace
        6
    """

    interval: int = DEFAULT_HEARTBEAT_S
    grace: int = DEFAULT_GRACE_S
    max_retry: int | None = DEFAULT_MAX_RETRY

    def __post_init__(self) -> None:
        _positive("heartbeat", self.interval, "the heartbeat settings")
        _positive("grace", self.grace, "the heartbeat settings")
        if self.grace <= self.interval:
            raise SpecError(
                f"the grace period ({self.grace} s) must be longer than the heartbeat interval "
                f"({self.interval} s), or every trial would look dead between two heartbeats."
            )
        if self.max_retry is not None and (
            not isinstance(self.max_retry, int) or self.max_retry < 0
        ):
            raise SpecError(
                f"`max_retry` must be a whole number >= 0 or None; got {self.max_retry!r}."
            )

    @classmethod
    def resolve(
        cls,
        interval: int | None = None,
        grace: int | None = None,
        max_retry: int | None = None,
        *,
        source: str = "the arguments",
    ) -> Heartbeat:
        """Settings from explicit values, else the environment, else the defaults.

        A grace period left unset is three heartbeat intervals (30 s for the default 10 s).
        """
        env = os.environ
        if interval is None and env.get("STUDYHALL_HEARTBEAT"):
            interval = _positive(
                "STUDYHALL_HEARTBEAT", env["STUDYHALL_HEARTBEAT"], "the environment"
            )
        if grace is None and env.get("STUDYHALL_GRACE"):
            grace = _positive("STUDYHALL_GRACE", env["STUDYHALL_GRACE"], "the environment")
        if max_retry is None and env.get("STUDYHALL_MAX_RETRY"):
            raw = env["STUDYHALL_MAX_RETRY"].strip()
            if not raw.isdigit():
                raise SpecError(
                    "`STUDYHALL_MAX_RETRY` from the environment must be a whole number; "
                    f"got {raw!r}."
                )
            max_retry = int(raw)
        interval = (
            DEFAULT_HEARTBEAT_S if interval is None else _positive("heartbeat", interval, source)
        )
        grace = 3 * interval if grace is None else _positive("grace", grace, source)
        return cls(interval, grace, DEFAULT_MAX_RETRY if max_retry is None else max_retry)


class NeverBeaten:
    """RUNNING trials without any heartbeat, and since when this process has seen them so.

    Measured on this process's own monotonic clock, so no two machines' clocks are compared. A
    stale check (one per heartbeat interval per worker) hands in the trials it found without a
    heartbeat and gets back those seen so for longer than ``grace`` seconds.

    Example:
        >>> NeverBeaten(grace=30).stale(study_id=1, trial_ids=[7])
        []
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._since: dict[int, dict[int, float]] = {}  # study id -> trial id -> first seen

    def stale(self, study_id: int, trial_ids: Iterable[int]) -> list[int]:
        """Of ``trial_ids`` (the study's RUNNING trials without a heartbeat), the dead ones."""
        now = time.monotonic()
        seen = self._since.get(study_id, {})
        # A new dict, swapped in whole: the stale-watch thread and the main loop both call this.
        since = {i: seen.get(i, now) for i in trial_ids}
        self._since[study_id] = since
        return sorted(i for i, first in since.items() if now - first > self.grace)


def retry_callback(max_retry: int | None) -> Any:
    """Optuna's retry callback; the queued copy keeps only the seed of the user attributes."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class _Retry(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study: Any, trial: Any) -> None:
            clean = copy.copy(trial)
            clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _KEEP_USER_ATTRS}
            super().__call__(study, clean)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: the class is stable in use
        return _Retry(max_retry=max_retry)


_own = threading.local()


@contextmanager
def own_heartbeats() -> Iterator[None]:
    """Within this block, Optuna's trials in this thread beat nothing and check for no stale
    trial: the caller does both (a worker, with a thread of its own).

    The storages' ``get_heartbeat_interval`` says ``None`` here, which is how Optuna decides.
    """
    before = getattr(_own, "on", False)
    _own.on = True
    try:
        yield
    finally:
        _own.on = before


def optuna_beats() -> bool:
    """Whether Optuna runs its own heartbeats in this thread (outside ``own_heartbeats``)."""
    return not getattr(_own, "on", False)
