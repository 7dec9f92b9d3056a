"""What to search and how: specs, search spaces, samplers, pruners, the runner and results."""

from __future__ import annotations

from studyhall.studies.results import StudyHandle, StudySummary, list_studies, open_study
from studyhall.studies.runner import Progress, run_study, trial_seed
from studyhall.studies.serving import QueuedStudy, serve_studies
from studyhall.studies.space import Param
from studyhall.studies.spec import Component, StudySpec, load_spec
from studyhall.studies.worker import join_study

__all__ = [
    "Component",
    "Param",
    "Progress",
    "QueuedStudy",
    "StudyHandle",
    "StudySpec",
    "StudySummary",
    "join_study",
    "list_studies",
    "load_spec",
    "open_study",
    "run_study",
    "serve_studies",
    "trial_seed",
]
