"""One root exception, so callers can catch everything studyhall raises on purpose.

Children also inherit the builtin they resemble (``SpecError`` is a ``ValueError``), so code
written against plain Python exceptions keeps working. Messages are one line and say how to fix.
"""

from __future__ import annotations

__all__ = [
    "StudyhallError",
    "SpecError",
    "StorageError",
    "StudyNotFoundError",
    "ObjectiveError",
    "DataError",
    "Interrupted",
]


class StudyhallError(Exception):
    """Root of every error studyhall raises deliberately."""


class SpecError(StudyhallError, ValueError):
    """A study spec (or a command-line override of it) is malformed; nothing was written."""


class StorageError(StudyhallError, ConnectionError):
    """A storage URL is unsupported, or the database behind it cannot be reached or used."""


class StudyNotFoundError(StudyhallError, LookupError):
    """No study of that name exists in the storage."""


class ObjectiveError(StudyhallError, RuntimeError):
    """An objective failed in a way that will not go away on the next trial (e.g. data missing)."""


class DataError(ObjectiveError):
    """A data set is missing, corrupt or cannot be fetched; the message names the command to
    fix it."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a worker; its running trial was marked FAIL (and queued again).

    A ``KeyboardInterrupt``, not a ``StudyhallError``, on purpose: an objective's
    ``except Exception`` must not swallow it, and Optuna marks the trial FAIL on it.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum)
        self.signum = signum
        self.detail = detail

    @property
    def signal_name(self) -> str:
        import signal

        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}" + (f"; {self.detail}" if self.detail else "")
