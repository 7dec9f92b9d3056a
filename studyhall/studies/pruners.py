"""Pruners by name: a table of Optuna's own classes, options passed through and checked.

``patient`` wraps another pruner, given by name like the top-level one:
``{name: patient, patience: 3, wrapped_pruner: median}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PRUNERS", "build_pruner", "pruner_option_names"]

PRUNERS: tuple[str, ...] = (
    "none", "median", "percentile", "successive_halving", "hyperband", "threshold", "patient",
    "wilcoxon",
)
"""Pruner names a spec may use, in the order error messages list them."""


def _classes() -> dict[str, Callable[..., Any]]:
    import optuna.pruners as p

    return {
        "none": p.NopPruner,
        "median": p.MedianPruner,
        "percentile": p.PercentilePruner,
        "successive_halving": p.SuccessiveHalvingPruner,
        "hyperband": p.HyperbandPruner,
        "threshold": p.ThresholdPruner,
        "patient": p.PatientPruner,
        "wilcoxon": p.WilcoxonPruner,
    }


def pruner_option_names(name: str) -> list[str]:
    """The keyword options Optuna's pruner ``name`` accepts."""
    params = inspect.signature(_classes()[name]).parameters
    return [p for p in params if p != "self"]


def build_pruner(name: str, options: Mapping[str, Any]) -> Any:
    """Instantiate pruner ``name``.

    Raises:
        TypeError / ValueError / KeyError: for options Optuna (or the wrapped name) rejects.
    """
    kwargs = dict(options)
    if name == "patient":
        wrapped = kwargs.get("wrapped_pruner")
        if isinstance(wrapped, str):
            kwargs["wrapped_pruner"] = build_pruner(wrapped, {})
        elif isinstance(wrapped, Mapping):
            inner = dict(wrapped)
            inner_name = inner.pop("name", None)
            if inner_name not in PRUNERS or inner_name == "patient":
                raise ValueError(
                    "wrapped_pruner must name one of "
                    + ", ".join(n for n in PRUNERS if n != "patient")
                    + f"; got {inner_name!r}"
                )
            kwargs["wrapped_pruner"] = build_pruner(inner_name, inner)
        elif wrapped is not None:
            raise ValueError("wrapped_pruner must be a pruner name or a mapping with `name`")
    return _classes()[name](**kwargs)
