"""Samplers by name: a table of Optuna's own classes, options passed through and checked."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["SAMPLERS", "build_sampler", "sampler_option_names"]


def _classes() -> dict[str, Callable[..., Any]]:
    import optuna.samplers as s

    return {
        "grid": s.GridSampler,
        "random": s.RandomSampler,
        "tpe": s.TPESampler,
        "cmaes": s.CmaEsSampler,
        "gp": s.GPSampler,
        "qmc": s.QMCSampler,
        "nsga2": s.NSGAIISampler,
        "nsga3": s.NSGAIIISampler,
        "bruteforce": s.BruteForceSampler,
    }


SAMPLERS: tuple[str, ...] = (
    "grid", "random", "tpe", "cmaes", "gp", "qmc", "nsga2", "nsga3", "bruteforce",
)
"""Sampler names a spec may use, in the order error messages list them."""

# Set by studyhall itself, never by a spec.
_RESERVED = {"seed", "search_space"}


def sampler_option_names(name: str) -> list[str]:
    """The keyword options Optuna's sampler ``name`` accepts (besides ``seed``)."""
    params = inspect.signature(_classes()[name]).parameters
    names = [p for p in params if p not in _RESERVED and p != "self"]
    # studyhall's TPE models at most this many trials (see _tpe.py); None: all, as Optuna's.
    return names + ["max_history"] if name == "tpe" else names


def build_sampler(
    name: str,
    options: Mapping[str, Any],
    *,
    seed: int | None,
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """Instantiate sampler ``name``; ``grid`` (param -> values) is required for ``grid``.

    Raises:
        TypeError / ValueError: from Optuna, for options it rejects.
    """
    cls = _classes()[name]
    kwargs = dict(options)
    if name == "grid":
        if grid is None:
            raise ValueError("the grid sampler needs a grid")
        kwargs["search_space"] = {k: list(v) for k, v in grid.items()}
    if "seed" in inspect.signature(cls).parameters:
        kwargs["seed"] = seed
    if name == "tpe":
        from studyhall.studies._tpe import BoundedTPESampler

        return BoundedTPESampler(**kwargs)
    return cls(**kwargs)
