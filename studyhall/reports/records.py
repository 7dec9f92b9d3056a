"""Trials as plain records: one shape shared by ``export`` (CSV, JSON) and the HTML report.

Optuna's ``FrozenTrial`` holds datetimes, distributions and NaN; a record holds only what a
spreadsheet or ``json.load`` can read back, so an export round-trips without Optuna.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from studyhall.errors import StudyhallError
from studyhall.studies.results import SPEC_ATTR, StudyHandle, open_study

__all__ = [
    "FORMATS",
    "ExportError",
    "delete_study",
    "export_model",
    "export_trials",
    "trial_record",
    "trial_records",
]

_logger = logging.getLogger(__name__)

FORMATS = ("csv", "json")
"""Formats ``export_trials`` writes."""


def _finite(value: Any) -> Any:
    # Strict JSON has no NaN/inf (jq and JavaScript reject them): spell them as strings.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def trial_record(trial: Any, *, intermediate: bool = True) -> dict[str, Any]:
    """One trial as a JSON-safe dict (number, state, values, params, times, attrs, curve)."""
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    record: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "values": list(trial.values) if trial.values is not None else None,
        "params": dict(trial.params),
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
        "duration_s": duration,
        "user_attrs": dict(trial.user_attrs),
    }
    if intermediate:
        curve = sorted(trial.intermediate_values.items())
        record["intermediate_values"] = {str(step): v for step, v in curve}
    return _finite(record)


def trial_records(handle: StudyHandle, *, intermediate: bool = True) -> list[dict[str, Any]]:
    """Every trial of a study as records, in trial-number order."""
    trials = sorted(handle.trials(), key=lambda t: t.number)
    return [trial_record(t, intermediate=intermediate) for t in trials]


_CSV_FIRST = ("number", "state", "datetime_start", "datetime_complete", "duration_s")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _csv_rows(
    handle: StudyHandle, records: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    n_values = len(handle.directions)
    value_cols = ["value"] if n_values == 1 else [f"values_{i}" for i in range(n_values)]
    params = _union(r["params"] for r in records)
    attrs = _union(r["user_attrs"] for r in records)
    header = ["number", "state", *value_cols, "datetime_start", "datetime_complete", "duration_s",
              *(f"params_{p}" for p in params), *(f"user_attrs_{a}" for a in attrs)]
    rows = []
    for r in records:
        row: dict[str, Any] = {k: _cell(r[k]) for k in _CSV_FIRST}
        values = r["values"] or [None] * n_values
        row.update({col: _cell(v) for col, v in zip(value_cols, values, strict=True)})
        row.update({f"params_{p}": _cell(r["params"].get(p)) for p in params})
        row.update({f"user_attrs_{a}": _cell(r["user_attrs"].get(a)) for a in attrs})
        rows.append(row)
    return header, rows


def _union(dicts: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def export_trials(handle: StudyHandle, fmt: str, out: TextIO) -> int:
    """Write every trial of ``handle`` to ``out`` as CSV or JSON; return the trial count.

    CSV has one row per trial (``value`` or ``values_0..``, ``params_*``, ``user_attrs_*``, like
    ``trials_dataframe``); JSON also carries the directions, the stored spec and each trial's
    intermediate values (learning curve), keyed by step.

    Example:
        >>> export_trials(open_study("beale-tpe"), "json", sys.stdout)  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    records = trial_records(handle, intermediate=fmt == "json")
    if fmt == "json":
        doc = {
            "study": handle.name,
            "directions": list(handle.directions),
            "spec": _finite(handle.study.user_attrs.get(SPEC_ATTR)),
            "n_trials": len(records),
            "trials": records,
        }
        json.dump(doc, out, indent=2, allow_nan=False)
        out.write("\n")
    else:
        header, rows = _csv_rows(handle, records)
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _logger.info("exported %d trials of %s as %s", len(records), handle.name, fmt)
    return len(records)


def delete_study(name: str, storage: str | None = None) -> int:
    """Delete study ``name`` and all its trials; return how many trials it held.

    Raises:
        StudyNotFoundError: no study of that name (nothing is deleted).
        StorageError: the storage cannot be reached.
    """
    import optuna

    from studyhall.storage import open_storage

    handle = open_study(name, storage)
    n = len(handle.trials())
    optuna.delete_study(study_name=name, storage=open_storage(handle.url))
    _logger.info("deleted study %s (%d trials) from %s", name, n, handle.url.masked)
    return n


class ExportError(StudyhallError, ValueError):
    """A model export asked for something the study does not hold (no such trial, no model)."""


MODEL_FILES = ("model.keras", "model.json", "params.json", "metrics.json")
"""What ``export_model`` writes into its directory."""


def _pick_trial(handle: StudyHandle, number: int | None) -> Any:
    if number is None:
        if len(handle.directions) > 1:
            raise ExportError(f"study {handle.name!r} has several objectives; pick a trial of "
                              "its Pareto front with --trial N.")
        best = handle.best_trial
        if best is None:
            raise ExportError(f"study {handle.name!r} has no complete trial yet; nothing to "
                              "export.")
        return best
    by_number = {t.number: t for t in handle.trials()}
    if number not in by_number:
        top = max(by_number) if by_number else None
        held = f"trials 0-{top}" if top is not None else "no trials"
        raise ExportError(f"--trial {number} is not a trial of study {handle.name!r} (it holds "
                          f"{held}).")
    return by_number[number]


def _model_source(
    handle: StudyHandle, trial: Any, artifact_dir: str | Path | None
) -> tuple[Path, Path]:
    """The stored ``.keras`` and JSON files of ``trial``, or one line saying why there are none."""
    from studyhall.objectives import _artifacts

    model_id = trial.user_attrs.get(_artifacts.MODEL_ATTR)
    json_id = trial.user_attrs.get(_artifacts.ARCHITECTURE_ATTR)
    if not model_id or not json_id:
        raise ExportError(
            f"trial {trial.number} of study {handle.name!r} ({trial.state.name.lower()}) has no "
            "saved model: only complete trials save one, and with `save_models: best` (the "
            "default) only those that were the study's best when they finished; set the "
            "objective option `save_models: all` to keep every trial's model."
        )
    candidates = [Path(artifact_dir)] if artifact_dir else []
    if not artifact_dir:
        stored = trial.user_attrs.get(_artifacts.DIR_ATTR)
        default = _artifacts.artifact_dir(handle.url)
        candidates = [Path(d) for d in (stored, default) if d]
    for directory in candidates:
        model, arch = directory / model_id, directory / json_id
        if model.is_file() and arch.is_file():
            return model, arch
    where = " or ".join(str(d) for d in candidates) or "no artifact directory"
    raise ExportError(f"the model of trial {trial.number} (artifact {model_id}) is not in {where}; "
                      "name the directory holding the study's artifacts with --artifacts DIR.")


def export_model(
    handle: StudyHandle,
    out: str | Path,
    *,
    trial: int | None = None,
    artifact_dir: str | Path | None = None,
) -> tuple[int, Path]:
    """Write a trial's trained model, hyperparameters and metrics into directory ``out``.

    ``out`` receives ``model.keras`` (``keras.models.load_model`` reads it; studyhall's
    custom layers register themselves when ``studyhall.objectives._conv`` is imported),
    ``model.json`` (the architecture), ``params.json`` (the objective, its fixed options and
    the trial's searched parameters) and ``metrics.json`` (the trial's record: values, user
    attributes such as ``test_accuracy``, the learning curve). Everything is checked before
    ``out`` is created, and the files appear together.

    Args:
        handle: the study.
        out: the directory to write (created; existing files of the same names are replaced).
        trial: the trial number (default: the best trial).
        artifact_dir: where the study's artifacts are (default: as the trial recorded it,
            else next to a file storage).

    Returns:
        The trial's number and the ``model.keras`` path.

    Raises:
        ExportError: no such trial, or it has no saved model.

    Example:
        >>> export_model(open_study("mnist-tpe"), "best-mnist")  # doctest: +SKIP
    """
    chosen = _pick_trial(handle, trial)
    model, arch = _model_source(handle, chosen, artifact_dir)
    spec = handle.spec
    params = {
        "study": handle.name,
        "trial": chosen.number,
        "objective": spec.objective.name if spec is not None else None,
        "fixed": _finite(dict(spec.objective.options)) if spec is not None else {},
        "searched": _finite(dict(chosen.params)),
        "seed": chosen.user_attrs.get("seed"),
    }
    metrics = {"study": handle.name, "directions": list(handle.directions),
               **trial_record(chosen)}
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".export-") as tmp:
        staged = Path(tmp)
        shutil.copyfile(model, staged / "model.keras")
        shutil.copyfile(arch, staged / "model.json")
        (staged / "params.json").write_text(json.dumps(params, indent=2, allow_nan=False) + "\n")
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        for name in MODEL_FILES:
            (staged / name).replace(target / name)
    _logger.info("exported the model of trial %d of %s to %s", chosen.number, handle.name, target)
    return chosen.number, target / "model.keras"
