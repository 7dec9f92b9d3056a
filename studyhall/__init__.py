"""studyhall: persistent hyperparameter studies for Keras networks, on Optuna.

Describe a study once (YAML file, preset name or dict), store it in SQLite, PostgreSQL or MySQL,
and work on it from any number of processes::

    import studyhall

    handle = studyhall.run_study("beale-tpe", n_trials=50)
    print(handle.best_trial.params)
"""

from __future__ import annotations

from studyhall.errors import (
    Interrupted,
    ObjectiveError,
    SpecError,
    StorageError,
    StudyhallError,
    StudyNotFoundError,
)
from studyhall.objectives import Hyperparameter, Objective, register_objective
from studyhall.reports.compare import compare_samplers
from studyhall.storage import Heartbeat
from studyhall.studies import (
    Progress,
    QueuedStudy,
    StudyHandle,
    StudySpec,
    StudySummary,
    join_study,
    list_studies,
    load_spec,
    open_study,
    run_study,
    serve_studies,
)
from studyhall.studies.presets import names as list_presets

__version__ = "0.1.0"

__all__ = [
    "Heartbeat",
    "Hyperparameter",
    "Interrupted",
    "Objective",
    "ObjectiveError",
    "Progress",
    "QueuedStudy",
    "SpecError",
    "StorageError",
    "StudyHandle",
    "StudyNotFoundError",
    "StudySpec",
    "StudySummary",
    "StudyhallError",
    "compare_samplers",
    "join_study",
    "list_presets",
    "list_studies",
    "load_spec",
    "open_study",
    "register_objective",
    "run_study",
    "serve_studies",
    "__version__",
]
