"""The objective registry: name -> what a trial computes, plus the parameters it understands.

An objective is any callable ``f(trial, params) -> float | sequence of floats``: ``params`` holds
the spec's fixed options merged with the values suggested for this trial. Built-in objectives
declare their parameters (``Hyperparameter``) so a spec is checked before any trial runs; a
user's objective may declare none, and then takes whatever the spec gives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Hyperparameter",
    "Objective",
    "ObjectiveInfo",
    "get_objective",
    "objective_names",
    "register_objective",
]


@runtime_checkable
class Objective(Protocol):
    """What a trial computes: the metric(s) of one configuration."""

    def __call__(self, trial: Any, params: Mapping[str, Any]) -> float | Sequence[float]: ...


@dataclass(frozen=True)
class Hyperparameter:
    """One parameter an objective understands: its type, default and allowed values.

    Attributes:
        kind: ``int``, ``float``, ``str`` or ``bool``.
        default: used when neither the spec's options nor its space set the parameter.
        choices: the allowed values, for a ``str`` (or any) parameter.
        low, high: inclusive bounds for numbers (``None``: unbounded).
        low_open: ``low`` itself is not allowed (e.g. a learning rate must be > 0).
        help: one line for error messages and docs.
    """

    kind: str
    default: Any
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    help: str = ""

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not allowed, or ``None`` if it is."""
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            return f"must be of type {self.kind}"
        if self.choices is not None and value not in self.choices:
            return "must be one of " + ", ".join(map(str, self.choices))
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


@dataclass(frozen=True)
class ObjectiveInfo:
    """A registered objective.

    Attributes:
        name: registry key used in specs.
        factory: returns the objective callable; called once per worker process, so it may
            import heavy frameworks lazily.
        params: the parameters it understands, or ``None`` to accept any.
        directions: maps the fixed options to the default direction(s), e.g. ``val_loss`` ->
            ``("minimize",)``.
        description: one line for ``studyhall`` listings.
        check: given the fixed options, why a combination of them is not allowed (``None``:
            it is), for rules no single parameter's bounds can say.
        prepare: run once per worker process before its first trial (e.g. import Keras), so
            that a trial's duration is its own, not the process's start-up.
        require: given the fixed options, raise ``DataError`` when something every trial
            needs from outside the spec is missing (a data set's local cache). A run checks it
            before it writes a study and a worker before its first trial, so a missing file
            fails in one line instead of a study holding a failed trial.
    """

    name: str
    factory: Callable[[], Objective]
    params: Mapping[str, Hyperparameter] | None = None
    directions: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    prepare: Callable[[], object] | None = None
    require: Callable[[Mapping[str, Any]], None] | None = None

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in (self.params or {}).items()}


_REGISTRY: dict[str, ObjectiveInfo] = {}
# Built-in objectives, each registered by the module of its name when that is imported: a
# worker imports only its own (the other three took 8-9 ms of a breast-cancer run's start).
_BUILTINS = ("beale", "breast_cancer", "mnist", "synthetic")
_loaded: set[str] = set()


def _load_builtins(*names: str) -> None:
    for name in names or _BUILTINS:
        if name in _BUILTINS and name not in _loaded:
            _loaded.add(name)
            importlib.import_module(f"studyhall.objectives.{name}")


def register_objective(
    name: str,
    *,
    params: Mapping[str, Hyperparameter] | None = None,
    directions: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``f(trial, params) -> value`` under ``name`` so specs can say ``objective: name``.

    Example:
        >>> @register_objective("parabola")
        ... def parabola(trial, params):
        ...     return (params["x"] - 2.0) ** 2
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = ObjectiveInfo(
            name=name,
            factory=lambda: func,
            params=params,
            directions=directions,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
        )
        return func

    return decorator


def _add(info: ObjectiveInfo) -> None:
    _REGISTRY[info.name] = info


def objective_names() -> list[str]:
    """Names of the registered objectives."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_objective(name: str) -> ObjectiveInfo:
    """Look up an objective by registry name or ``package.module:function`` path.

    Raises:
        KeyError: no such registered name (message lists the registered ones).
        ImportError / AttributeError: a ``module:function`` path that does not resolve.
    """
    _load_builtins(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        func = getattr(importlib.import_module(module_name), attr)
        if not callable(func):
            raise TypeError(f"{name} is not callable")
        # The import may have registered it under its own name with declared params.
        for info in _REGISTRY.values():
            if info.factory() is func:
                return info
        return ObjectiveInfo(name=name, factory=lambda: func)
    raise KeyError(name)
