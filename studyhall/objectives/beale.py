"""The Beale function: a cheap 2-D landscape with a narrow valley, minimum 0 at (3, 0.5).

No training, so studies on it measure samplers and storage, not Keras.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studyhall.objectives.registry import Hyperparameter, ObjectiveInfo, _add

__all__ = ["beale"]

PARAMS = {
    "x": Hyperparameter("float", 0.0, low=-4.5, high=4.5, help="first coordinate"),
    "y": Hyperparameter("float", 0.0, low=-4.5, high=4.5, help="second coordinate"),
}


def beale(trial: Any, params: Mapping[str, Any]) -> float:
    """Beale's function at (params['x'], params['y'])."""
    x, y = float(params["x"]), float(params["y"])
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


_add(
    ObjectiveInfo(
        name="beale",
        factory=lambda: beale,
        params=PARAMS,
        directions=lambda options: ("minimize",),
        description="Beale test function (minimum 0 at x=3, y=0.5); no training.",
    )
)
