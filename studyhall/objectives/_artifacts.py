"""Trained models kept as Optuna artifacts: a ``.keras`` file and its JSON architecture per trial.

A trial's weights are worth keeping only when someone may want them later, so the objective
option ``save_models`` says which: ``best`` (default: a completed trial whose value beats every
earlier completed trial of its study, so the study's winner always has its model), ``all``
(every completed trial) or ``none``. Pruned and failed trials never save.

Models go to Optuna's ``FileSystemArtifactStore``, which the dashboard can read. The directory
sits next to a file storage (``runs.db`` -> ``runs.db.artifacts/``); for a server storage it
is the ``artifact_dir`` option, else ``$STUDYHALL_ARTIFACTS``, else ``./studyhall-artifacts``.
The worker says which storage it serves (``trial_artifacts``); ``save_trial_model`` is called
by ``_keras.train_reporting`` once the best epoch's weights are restored, so a backprop trial
saves without code of its own; the gradient-free trainers and runs trained in threads call it
themselves with the model they ended with.

Example:
    >>> with trial_artifacts(parse_url("sqlite:///runs.db"), {"save_models": "all"}):
    ...     study.optimize(objective)          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studyhall.objectives.registry import Hyperparameter as H

__all__ = [
    "MODEL_ATTR",
    "PARAMS",
    "SAVE_MODES",
    "artifact_dir",
    "save_trial_model",
    "trial_artifacts",
]

_logger = logging.getLogger(__name__)

SAVE_MODES = ("none", "best", "all")
MODEL_ATTR = "model_artifact"
"""User attribute holding the artifact id of a trial's ``.keras`` file."""
ARCHITECTURE_ATTR = "model_json_artifact"
DIR_ATTR = "artifact_dir"
SERVER_DEFAULT = "studyhall-artifacts"

PARAMS: dict[str, H] = {
    "save_models": H("str", "best", choices=SAVE_MODES,
                     help="which completed trials keep their best-epoch model as an artifact"),
    "artifact_dir": H("str", "", help="artifact directory ('': next to a file storage)"),
}
"""Options every Keras objective may merge into its own parameters."""


def artifact_dir(url: Any, configured: str | None = None) -> Path | None:
    """Where the models of a study on ``url`` (a ``StorageURL``) go; ``None``: nowhere.

    ``configured`` (the ``artifact_dir`` option) wins; a SQLite or journal file gets
    ``<file>.artifacts`` beside it; an in-memory database keeps none; a server storage uses
    ``$STUDYHALL_ARTIFACTS`` or ``./studyhall-artifacts``.
    """
    if configured:
        return Path(configured).expanduser().resolve()
    path = getattr(url, "path", None)
    if path:
        return Path(f"{Path(path).resolve()}.artifacts")
    if getattr(url, "backend", None) == "sqlite":  # an in-memory database: nothing outlives it
        return None
    env = os.environ.get("STUDYHALL_ARTIFACTS")
    return Path(env or SERVER_DEFAULT).expanduser().resolve()


@dataclass(frozen=True)
class _Target:
    directory: Path | None
    mode: str


_TARGET: ContextVar[_Target | None] = ContextVar("studyhall_artifacts", default=None)


@contextlib.contextmanager
def trial_artifacts(url: Any, options: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, Keras objectives save models for the study on ``url``."""
    mode = str(options.get("save_models", "best"))
    directory = None
    if url is not None and mode != "none":
        directory = artifact_dir(url, options.get("artifact_dir") or None)
    token = _TARGET.set(_Target(directory, mode))
    try:
        yield
    finally:
        _TARGET.reset(token)


def _beats_completed(trial: Any, value: float, maximize: bool) -> bool:
    """Whether ``value`` is better than every completed trial's (True when there is none).

    Asks the storage for the best value (one aggregate query on a SQL storage) instead of
    loading every completed trial: a study of 10,000 trials must not slow each new one down.
    """
    from studyhall.storage._tally import tally_trials

    try:
        study = trial.study
        if len(study.directions) > 1:
            return True
        best = tally_trials(study._storage, study._study_id).best(maximize)
    except (AttributeError, NotImplementedError):
        return True
    if best is None:
        return True
    return value > best if maximize else value < best


def _target(trial: Any, value: float, maximize: bool) -> _Target | None:
    target = _TARGET.get()
    if target is None or target.directory is None or target.mode == "none":
        return None
    if target.mode == "best" and not _beats_completed(trial, value, maximize):
        return None
    return target


def save_trial_model(trial: Any, model: Any, value: float, maximize: bool) -> str | None:
    """Save ``model`` as ``trial``'s artifacts when the active ``save_models`` mode says so.

    ``model`` may also be a function that builds it, so objectives that train without Keras
    (the gradient-free trainers) build a Keras model only for the trials that keep one.

    Returns the ``.keras`` file's artifact id (also stored as the trial's ``model_artifact``
    user attribute), or ``None`` when nothing was saved. Outside ``trial_artifacts`` (a
    plain Optuna study) nothing is saved.
    """
    target = _target(trial, value, maximize)
    if target is None or target.directory is None:
        return None
    if callable(model) and not hasattr(model, "save"):
        model = model()  # a builder: the model is made only now that it is kept
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    target.directory.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(target.directory)
    trial = getattr(trial, "optuna_trial", trial)  # a multi-objective trial's wrapper (worker.py)
    with tempfile.TemporaryDirectory(prefix="studyhall-model-") as tmp:
        keras_file = Path(tmp) / f"trial-{trial.number}.keras"
        json_file = Path(tmp) / f"trial-{trial.number}.json"
        model.save(keras_file)
        json_file.write_text(model.to_json(), encoding="utf-8")
        model_id = upload_artifact(artifact_store=store, file_path=str(keras_file),
                                   study_or_trial=trial, mimetype="application/zip")
        json_id = upload_artifact(artifact_store=store, file_path=str(json_file),
                                  study_or_trial=trial, mimetype="application/json")
    trial.set_user_attr(MODEL_ATTR, model_id)
    trial.set_user_attr(ARCHITECTURE_ATTR, json_id)
    trial.set_user_attr(DIR_ATTR, str(target.directory))
    _logger.info("trial %d: model saved as artifact %s in %s", trial.number, model_id,
                 target.directory)
    return model_id
