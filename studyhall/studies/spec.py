"""Study specs: a YAML file, a preset name or a dict becomes one validated, frozen ``StudySpec``.

Everything is checked here, before a database is touched or TensorFlow imported, and every
message names the key, what is allowed, what was given and where it came from::

    `sampler` in studies/x.yaml must be one of grid, random, tpe, ...; got 'tpee'.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from studyhall.errors import SpecError, StorageError
from studyhall.objectives.registry import ObjectiveInfo, get_objective, objective_names
from studyhall.storage.urls import parse_url
from studyhall.studies import presets
from studyhall.studies.pruners import PRUNERS, build_pruner, pruner_option_names
from studyhall.studies.samplers import SAMPLERS, build_sampler, sampler_option_names
from studyhall.studies.space import Param, grid_size, grid_space

__all__ = ["Component", "StudySpec", "load_spec"]

_TOP_KEYS = (
    "name", "description", "objective", "space", "direction", "directions", "sampler", "pruner",
    "seed", "n_trials", "timeout", "storage",
)
_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "grid")
_PARAM_TYPES = ("float", "int", "categorical")
_DIRECTIONS = ("minimize", "maximize")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Component:
    """A named part of a spec with its options: the objective, the sampler or the pruner."""

    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **_plain(self.options)}


@dataclass(frozen=True)
class StudySpec:
    """A validated study: what to search, how, for how long and where to store it.

    Build one with :func:`load_spec`; it is immutable, and ``to_dict()`` round-trips through
    ``load_spec``.

    Attributes:
        name: the study's name in storage.
        objective: registry name + fixed options (e.g. ``epochs``).
        space: the searched parameters, in order.
        directions: ``minimize``/``maximize`` per objective value.
        sampler, pruner: Optuna's, by name, with options.
        seed: study seed; trial seeds derive from it and the trial number.
        n_trials: total trials the study should hold (finished ones, across all runs).
        timeout: seconds a run may take.
        storage: storage URL, or ``None`` for the default SQLite file.
        source: where the spec came from, for messages.
    """

    name: str
    objective: Component
    space: tuple[Param, ...]
    directions: tuple[str, ...] = ("minimize",)
    sampler: Component = Component("tpe")
    pruner: Component = Component("none")
    seed: int | None = None
    n_trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    description: str = ""
    source: str = field(default="a spec", compare=False)

    @property
    def grid(self) -> dict[str, tuple[Any, ...]] | None:
        """Param -> grid values, or ``None`` if the space cannot be gridded."""
        return grid_space(self.space)

    @property
    def budget(self) -> int | None:
        """Trials the study should hold: ``n_trials``, capped at the grid size for a grid."""
        grid = self.grid if self.sampler.name == "grid" else None
        if grid is None:
            return self.n_trials
        size = grid_size(grid)
        return size if self.n_trials is None else min(self.n_trials, size)

    def search_signature(self) -> dict[str, Any]:
        """What must match for two specs to share one study: objective, space, directions."""
        d = self.to_dict()
        return {k: d[k] for k in ("objective", "space", "directions")}

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-safe dict that ``load_spec`` accepts."""
        out: dict[str, Any] = {
            "name": self.name,
            "objective": self.objective.to_dict(),
            "space": {p.name: p.to_dict() for p in self.space},
            "directions": list(self.directions),
            "sampler": self.sampler.to_dict(),
            "pruner": self.pruner.to_dict(),
        }
        for key in ("description", "seed", "n_trials", "timeout", "storage"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        return out

    def with_overrides(self, **overrides: Any) -> StudySpec:
        """A copy with top-level keys replaced (``None`` values are ignored), re-validated."""
        return load_spec(self.to_dict(), overrides=overrides, source=self.source)

    def with_seed(self, seed: int) -> StudySpec:
        return replace(self, seed=seed)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Checker:
    """Validation context: knows where each key came from, and fails with one clear line."""

    def __init__(self, source: str, overridden: set[str], overrides_from: str) -> None:
        self.source = source
        self.overridden = overridden
        self.overrides_from = overrides_from

    def where(self, key: str) -> str:
        top = key.split(".", 1)[0]
        return self.overrides_from if top in self.overridden else self.source

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"`{key}` in {self.where(key)} {message}")

    def unknown(self, key: str, got: str, allowed: Sequence[str], what: str = "key") -> SpecError:
        hint = difflib.get_close_matches(got, allowed, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return SpecError(
            f"unknown {what} {got!r} in `{key}` of {self.where(key)}{did}; "
            f"allowed: {', '.join(allowed)}."
        )

    def one_of(self, key: str, got: Any, allowed: Sequence[str]) -> SpecError:
        hint = difflib.get_close_matches(str(got), allowed, n=1) if isinstance(got, str) else []
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return self.fail(key, f"must be one of {', '.join(allowed)}; got {got!r}{did}.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _component(c: _Checker, key: str, raw: Any, default: str | None) -> tuple[str, dict[str, Any]]:
    if raw is None:
        if default is None:
            raise c.fail(key, "is required.")
        return default, {}
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, Mapping):
        raise c.fail(key, f"must be a name or a mapping with `name`; got {raw!r}.")
    options = dict(raw)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise c.fail(f"{key}.name", f"must be a string; got {name!r}.")
    nested = options.pop("options", None)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise c.fail(f"{key}.options", f"must be a mapping; got {nested!r}.")
        options.update(nested)
    return name, options


def _check_objective(c: _Checker, raw: Any) -> tuple[ObjectiveInfo, dict[str, Any]]:
    name, options = _component(c, "objective", raw, None)
    try:
        info = get_objective(name)
    except KeyError:
        raise c.one_of("objective", name, objective_names() + ["package.module:function"]) from None
    except (ImportError, AttributeError, TypeError) as exc:
        raise c.fail("objective", f"names {name!r}, which cannot be imported: {exc}.") from None
    if info.params is not None:
        for opt, value in options.items():
            hp = info.params.get(opt)
            if hp is None:
                raise c.unknown("objective", opt, sorted(info.params), what="option")
            why = hp.check(value)
            if why:
                raise c.fail(f"objective.{opt}", f"{why}; got {value!r}.")
    why = info.check(options) if info.check else None
    if why:
        raise SpecError(f"`objective` in {c.where('objective')}: {why}.")
    return info, options


def _check_param(c: _Checker, info: ObjectiveInfo, name: str, raw: Any) -> Param:
    key = f"space.{name}"
    hp = info.params.get(name) if info.params is not None else None
    if info.params is not None and hp is None:
        raise c.unknown("space", name, sorted(info.params),
                        what=f"parameter of objective {info.name}")
    if isinstance(raw, (list, tuple)):
        raw = {"type": "categorical", "choices": list(raw)}
    if not isinstance(raw, Mapping):
        raise c.fail(
            key,
            "must be a list of choices or a mapping with low/high (fixed values belong in the "
            f"objective's options); got {raw!r}.",
        )
    for k in raw:
        if k not in _PARAM_KEYS:
            raise c.unknown(key, str(k), _PARAM_KEYS)
    kind = raw.get("type")
    if kind is None:
        if "choices" in raw or (
            "grid" in raw and not all(_is_number(v) for v in raw["grid"] or [None])
        ):
            kind = "categorical"
        else:
            bounds = [raw.get("low"), raw.get("high"), *(raw.get("grid") or [])]
            numbers = [b for b in bounds if b is not None]
            is_int = (numbers and all(_is_int(b) for b in numbers)
                      and not _is_number_float(raw.get("step")))
            kind = "int" if (is_int and (hp is None or hp.kind == "int")) else "float"
    if kind not in _PARAM_TYPES:
        raise c.one_of(f"{key}.type", kind, _PARAM_TYPES)

    if kind == "categorical":
        choices = raw.get("choices", raw.get("grid"))
        if not isinstance(choices, (list, tuple)) or not choices:
            raise c.fail(f"{key}.choices", f"must be a non-empty list; got {choices!r}.")
        for k in ("low", "high", "log", "step"):
            if k in raw:
                raise c.fail(f"{key}.{k}", "does not apply to a categorical parameter.")
        for v in choices:
            if not _is_scalar(v):
                raise c.fail(f"{key}.choices",
                             f"must hold numbers, strings, booleans or null; got {v!r}.")
            why = hp.check(v) if hp else None
            if why:
                raise c.fail(f"{key}.choices", f"value {v!r} {why}.")
        if len(set(map(repr, choices))) != len(choices):
            raise c.fail(f"{key}.choices", f"must not repeat a value; got {list(choices)!r}.")
        return Param(name, "categorical", choices=tuple(choices))

    if hp is not None and hp.kind not in ("int", "float"):
        raise c.fail(f"{key}.type",
                     f"must be categorical, since {name} is a {hp.kind}; got {kind!r}.")
    if hp is not None and hp.kind == "int" and kind == "float":
        raise c.fail(f"{key}.type",
                     f"must be int or categorical, since {name} is an integer; got 'float'.")
    grid = raw.get("grid")
    if grid is not None:
        if not isinstance(grid, (list, tuple)) or not grid:
            raise c.fail(f"{key}.grid", f"must be a non-empty list of values; got {grid!r}.")
        check = _is_int if kind == "int" else _is_number
        for v in grid:
            if not check(v):
                raise c.fail(f"{key}.grid", f"must hold {kind} values; got {v!r}.")
        if len(set(grid)) != len(grid):
            raise c.fail(f"{key}.grid", f"must not repeat a value; got {list(grid)!r}.")
    low = raw.get("low", min(grid) if grid else None)
    high = raw.get("high", max(grid) if grid else None)
    check = _is_int if kind == "int" else _is_number
    for k, v in (("low", low), ("high", high)):
        if v is None:
            raise c.fail(f"{key}.{k}", f"is required for a {kind} parameter (or give `grid`).")
        if not check(v):
            raise c.fail(f"{key}.{k}",
                         f"must be {'an integer' if kind == 'int' else 'a number'}; got {v!r}.")
    if low > high:
        raise c.fail(key, f"has low > high ({low} > {high}); swap them.")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise c.fail(f"{key}.log", f"must be true or false; got {log!r}.")
    step = raw.get("step")
    if step is not None:
        if not check(step) or step <= 0:
            raise c.fail(f"{key}.step",
                         f"must be a positive {'integer' if kind == 'int' else 'number'}; "
                         f"got {step!r}.")
        if log:
            raise c.fail(key, "cannot have both `log` and `step` (Optuna does not support it).")
    if log and low <= 0:
        raise c.fail(f"{key}.low", f"must be > 0 on a log scale; got {low!r}.")
    if grid is not None:
        outside = [v for v in grid if not low <= v <= high]
        if outside:
            raise c.fail(f"{key}.grid",
                         f"values {outside} lie outside [low, high] = [{low}, {high}].")
    if hp is not None:
        for k, v in (("low", low), ("high", high)):
            why = hp.check(v)
            if why:
                raise c.fail(f"{key}.{k}", f"{why} for {name}; got {v!r}.")
    return Param(
        name,
        kind,
        low=low,
        high=high,
        log=log,
        step=step,
        grid=tuple(grid) if grid is not None else None,
    )


def _is_number_float(v: Any) -> bool:
    return isinstance(v, float)


def _check_directions(c: _Checker, raw: Mapping[str, Any], info: ObjectiveInfo,
                      options: Mapping[str, Any]) -> tuple[str, ...]:
    if "direction" in raw and "directions" in raw:
        raise c.fail("direction", "and `directions` are both given; keep one.")
    natural = info.directions({**info.defaults(), **options}) if info.directions else None
    if "direction" in raw:
        d = raw["direction"]
        if d not in _DIRECTIONS:
            raise c.one_of("direction", d, _DIRECTIONS)
        directions: tuple[str, ...] = (d,)
    elif "directions" in raw:
        ds = raw["directions"]
        if not isinstance(ds, (list, tuple)) or not ds:
            raise c.fail("directions",
                         f"must be a non-empty list of minimize/maximize; got {ds!r}.")
        for d in ds:
            if d not in _DIRECTIONS:
                raise c.one_of("directions", d, _DIRECTIONS)
        directions = tuple(ds)
    else:
        directions = natural or ("minimize",)
    if natural is not None and directions != natural:
        key = "direction" if "direction" in raw else "directions"
        raise c.fail(
            key,
            f"is {list(directions)} but objective {info.name} with these options is "
            f"{list(natural)}; drop `{key}` or change the objective's metric.",
        )
    return directions


def _check_sampler(c: _Checker, raw: Any, space: tuple[Param, ...], seed: int | None) -> Component:
    name, options = _component(c, "sampler", raw, "tpe")
    if name not in SAMPLERS:
        raise c.one_of("sampler", name, SAMPLERS)
    allowed = sampler_option_names(name)
    for opt in options:
        if opt == "seed":
            raise c.fail("sampler.seed", "is not an option; set the top-level `seed`.")
        if opt not in allowed:
            raise c.unknown("sampler", opt, allowed, what=f"option of sampler {name}")
    grid = grid_space(space)
    if name == "grid" and grid is None:
        bad = next(p for p in space if p.grid_values() is None)
        raise c.fail(
            f"space.{bad.name}",
            "cannot be gridded (a continuous or log-scale range); give it `grid: [values]`, a "
            "`step`, or `choices`, or use another sampler.",
        )
    try:
        build_sampler(name, options, seed=seed, grid=grid)
    except (TypeError, ValueError, ImportError) as exc:
        raise c.fail("sampler", f"options are rejected by Optuna's {name} sampler: {exc}") from None
    return Component(name, MappingProxyType(options))


def _check_pruner(c: _Checker, raw: Any, directions: tuple[str, ...]) -> Component:
    name, options = _component(c, "pruner", raw, "none")
    if name not in PRUNERS:
        raise c.one_of("pruner", name, PRUNERS)
    allowed = pruner_option_names(name)
    for opt in options:
        if opt not in allowed:
            raise c.unknown("pruner", opt, allowed, what=f"option of pruner {name}")
    if name != "none" and len(directions) > 1:
        raise c.fail("pruner", "must be none for a multi-objective study "
                               f"(Optuna cannot prune it); got {name!r}.")
    try:
        build_pruner(name, options)
    except (TypeError, ValueError, KeyError) as exc:
        raise c.fail("pruner", f"options are rejected by Optuna's {name} pruner: {exc}") from None
    return Component(name, MappingProxyType(options))


def _validate(raw: Mapping[str, Any], c: _Checker, default_name: str | None) -> StudySpec:
    for key in raw:
        if key not in _TOP_KEYS:
            raise c.unknown("spec", str(key), _TOP_KEYS)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise c.fail(
            "name",
            "must be 1-128 letters, digits, '_', '.' or '-' (starting with a letter or digit); "
            f"got {name!r}.",
        )
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise c.fail("description", f"must be a string; got {description!r}.")

    info, options = _check_objective(c, raw.get("objective"))

    space_raw = raw.get("space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise c.fail("space",
                     f"must be a non-empty mapping of parameter -> range; got {space_raw!r}.")
    space = tuple(_check_param(c, info, str(k), v) for k, v in space_raw.items())
    both = sorted(set(options) & {p.name for p in space})
    if both:
        raise c.fail(f"space.{both[0]}", "is also fixed in the objective's options; keep one.")

    seed = raw.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= _MAX_SEED):
        raise c.fail("seed", f"must be an integer in [0, {_MAX_SEED}]; got {seed!r}.")
    n_trials = raw.get("n_trials")
    if n_trials is not None and (not _is_int(n_trials) or n_trials < 1):
        raise c.fail("n_trials", f"must be a positive integer; got {n_trials!r}.")
    timeout = raw.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        raise c.fail("timeout", f"must be a positive number of seconds; got {timeout!r}.")

    directions = _check_directions(c, raw, info, options)
    sampler = _check_sampler(c, raw.get("sampler"), space, seed)
    pruner = _check_pruner(c, raw.get("pruner"), directions)
    if n_trials is None and timeout is None and sampler.name != "grid":
        raise c.fail(
            "n_trials",
            "is missing: set `n_trials` or `timeout` (or pass --trials/--timeout) "
            "so the study ends.",
        )

    storage = raw.get("storage")
    if storage is not None:
        try:
            storage = parse_url(storage, source=f"`storage` in {c.where('storage')}").url
        except StorageError as exc:
            raise SpecError(str(exc)) from None

    return StudySpec(
        name=name,
        objective=Component(info.name, MappingProxyType(options)),
        space=space,
        directions=directions,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        n_trials=n_trials,
        timeout=float(timeout) if timeout is not None else None,
        storage=storage,
        description=description,
        source=c.source,
    )


def _read_yaml(path: Path, source: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise SpecError(f"{source} is not valid YAML{at}: {problem}.") from None
    except OSError as exc:
        raise SpecError(f"cannot read {source}: {exc.strerror}.") from None


def load_spec(
    spec: str | os.PathLike[str] | Mapping[str, Any] | StudySpec,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_from: str = "the arguments",
    source: str | None = None,
) -> StudySpec:
    """Parse and validate a spec: a YAML path, a preset name, a dict, or a ``StudySpec``.

    Args:
        spec: where the study is described.
        overrides: top-level keys that replace the spec's (``n_trials``, ``seed``, ``storage``,
            ...); ``None`` values are ignored.
        overrides_from: how messages name the overrides' origin, e.g. ``the command line``.
        source: how messages name the spec's origin (default: the path, preset or ``a dict``).

    Raises:
        SpecError: the spec is malformed; the message names the key, the allowed values, the
            value given and where it came from.

    Example:
        >>> spec = load_spec({"objective": "beale", "n_trials": 50, "space": {
        ...     "x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}}}, source="doc")
        >>> spec.sampler.name, spec.directions
        ('tpe', ('minimize',))
    """
    default_name = None
    if isinstance(spec, StudySpec):
        raw: Any = spec.to_dict()
        source = source or spec.source
    elif isinstance(spec, Mapping):
        raw = spec
        source = source or "a spec dict"
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        text = str(spec)
        if path.is_file():
            source = source or text
            raw = _read_yaml(path, source)
            default_name = path.stem
        elif text in presets.names():
            source = source or f"preset {text}"
            raw = _read_yaml(presets.path(text), source)
            default_name = text
        else:
            close = difflib.get_close_matches(text, presets.names(), n=1)
            hint = f" (did you mean preset {close[0]!r}?)" if close else ""
            raise SpecError(
                f"{text!r} is neither a spec file nor a preset{hint}; presets: "
                f"{', '.join(presets.names())}."
            )
    else:
        raise SpecError("a spec must be a path, a preset name or a mapping; "
                        f"got {type(spec).__name__}.")
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source} must hold a mapping of spec keys; got {type(raw).__name__}.")
    merged = dict(raw)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged.update(given)
    checker = _Checker(source, set(given), overrides_from)
    return _validate(merged, checker, default_name)
