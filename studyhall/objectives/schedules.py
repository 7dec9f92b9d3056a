"""Learning-rate schedules whose clock is the epoch, as Keras ``LearningRateSchedule`` objects.

The seed articles decay the rate per epoch (``lr0 / (1 + k t)``, ``lr0 exp(-k t)``) or restart a
cosine decay every few epochs (SGDR, the articles' "random restarts"). Keras optimizers call a
schedule with their step counter, so each schedule takes ``steps_per_epoch`` and computes
``t = step / steps_per_epoch``: ``t`` is a whole number at each epoch's start and moves
smoothly within an epoch. The maths is ``keras.ops`` only, so it runs inside the compiled
training loop, where ``step`` is a traced value.

Importing this module imports Keras (through ``_keras.keras()``, which picks the backend); the
objectives import it only when a trial trains.

Example:
    >>> lr = make_schedule("exp_decay", 0.01, decay=0.1, steps_per_epoch=430)
    >>> optimizer = keras.optimizers.SGD(learning_rate=lr)
"""

from __future__ import annotations

import math
from typing import Any

from studyhall.errors import SpecError
from studyhall.objectives import _keras

__all__ = ["SCHEDULES", "CosineRestarts", "EpochSchedule", "ExpDecay", "TimeDecay", "make_schedule"]

SCHEDULES = ("constant", "time_decay", "exp_decay", "cosine_restarts")

_k = _keras.keras()
_ops = _k.ops
_serializable = _k.saving.register_keras_serializable(package="studyhall")


class EpochSchedule(_k.optimizers.schedules.LearningRateSchedule):  # type: ignore[name-defined]
    """Base: a rate that is a function of ``t`` in epochs (``step / steps_per_epoch``)."""

    def __init__(self, initial_learning_rate: float, steps_per_epoch: int) -> None:
        if not initial_learning_rate > 0:
            raise SpecError(f"learning_rate must be > 0; got {initial_learning_rate!r}.")
        if steps_per_epoch < 1:
            raise SpecError(f"steps_per_epoch must be >= 1; got {steps_per_epoch!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)

    def epochs(self, step: Any) -> Any:
        """``t``: the optimizer's step counter in epochs, as float32."""
        return _ops.divide(_ops.cast(step, "float32"), float(self.steps_per_epoch))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "steps_per_epoch": self.steps_per_epoch}


@_serializable
class TimeDecay(EpochSchedule):
    """Time-based decay, ``lr0 / (1 + k t)``: Keras 2's ``decay`` argument, counted in epochs."""

    def __init__(self, initial_learning_rate: float, decay: float, steps_per_epoch: int) -> None:
        super().__init__(initial_learning_rate, steps_per_epoch)
        self.decay = float(decay)

    def __call__(self, step: Any) -> Any:
        return self.initial_learning_rate / (1.0 + self.decay * self.epochs(step))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "decay": self.decay}


@_serializable
class ExpDecay(EpochSchedule):
    """Exponential decay, ``lr0 exp(-k t)``."""

    def __init__(self, initial_learning_rate: float, decay: float, steps_per_epoch: int) -> None:
        super().__init__(initial_learning_rate, steps_per_epoch)
        self.decay = float(decay)

    def __call__(self, step: Any) -> Any:
        return self.initial_learning_rate * _ops.exp(-self.decay * self.epochs(step))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "decay": self.decay}


@_serializable
class CosineRestarts(EpochSchedule):
    """Cosine decay with warm restarts (SGDR with a fixed period): every ``restart_epochs``
    epochs the rate jumps back to ``lr0``, then falls along a half cosine towards
    ``alpha * lr0``: ``lr0 (alpha + (1 - alpha) (1 + cos(pi s / P)) / 2)``, with ``s = t mod P``.
    """

    def __init__(self, initial_learning_rate: float, restart_epochs: float, steps_per_epoch: int,
                 alpha: float = 0.0) -> None:
        super().__init__(initial_learning_rate, steps_per_epoch)
        if not restart_epochs > 0:
            raise SpecError(f"restart_epochs must be > 0; got {restart_epochs!r}.")
        self.restart_epochs = float(restart_epochs)
        self.alpha = float(alpha)

    def __call__(self, step: Any) -> Any:
        # Modulo in steps, not epochs: integer steps stay exact in float32 up to 2**24.
        period = self.restart_epochs * self.steps_per_epoch
        phase = _ops.divide(_ops.mod(_ops.cast(step, "float32"), period), period)
        cosine = 0.5 * (1.0 + _ops.cos(math.pi * phase))
        return self.initial_learning_rate * (self.alpha + (1.0 - self.alpha) * cosine)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "restart_epochs": self.restart_epochs, "alpha": self.alpha}


def make_schedule(name: str, learning_rate: float, *, steps_per_epoch: int, decay: float = 0.0,
                  restart_epochs: float = 1.0) -> float | EpochSchedule:
    """The learning rate an optimizer takes: a float for ``constant``, else a schedule.

    A constant stays a float so the compiled training loop can share one executable between
    trials that differ only in their rate (a schedule is code, compiled into the loop).
    ``decay`` is ``k`` for ``time_decay`` and ``exp_decay``; ``restart_epochs`` is the period of
    ``cosine_restarts``.

    Raises:
        SpecError: an unknown schedule name or an invalid argument.
    """
    if name == "constant":
        return float(learning_rate)
    if name == "time_decay":
        return TimeDecay(learning_rate, decay, steps_per_epoch)
    if name == "exp_decay":
        return ExpDecay(learning_rate, decay, steps_per_epoch)
    if name == "cosine_restarts":
        return CosineRestarts(learning_rate, restart_epochs, steps_per_epoch)
    raise SpecError(f"`schedule` must be one of {', '.join(SCHEDULES)}; got {name!r}.")
