"""A report on a study of thousands of trials answers in seconds and stays reproducible."""

from __future__ import annotations

import random
import time

import optuna
import pytest

from studyhall.reports import plots
from studyhall.storage import parse_url
from studyhall.studies.results import StudyHandle
from tests.reports.conftest import assert_real_png


def _large(n: int) -> StudyHandle:
    """``n`` trials where only ``x`` matters; 5 learning-curve steps each, every 4th pruned."""
    rng = random.Random(0)
    dist = {"x": optuna.distributions.FloatDistribution(-1, 1),
            "k": optuna.distributions.CategoricalDistribution(["a", "b", "c"])}
    trials = []
    for i in range(n):
        x, k = rng.uniform(-1, 1), rng.choice("abc")
        curve = {step: 10 * x**2 + 1 / (step + 1) for step in range(5)}
        pruned = i % 4 == 0
        trials.append(optuna.trial.create_trial(
            params={"x": x, "k": k}, distributions=dist, intermediate_values=curve,
            state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
            value=None if pruned else curve[4] + 0.01 * "abc".index(k)))
    study = optuna.create_study(study_name="large")
    study.add_trials(trials)
    return StudyHandle(study, parse_url("sqlite:///:memory:"))


@pytest.fixture(scope="module")
def large() -> StudyHandle:
    return _large(3000)


def test_a_3000_trial_study_s_slow_figures_take_seconds_not_minutes(large, tmp_path):
    start = time.perf_counter()
    plot, importances = plots.plot_importances(large, tmp_path / "importances.png")
    curves = plots.plot_intermediate(large, tmp_path / "intermediate.png")
    # Drawn whole, these took 40 s (fANOVA, at 1,000 trials) and 15 s (one line per curve).
    assert time.perf_counter() - start < 30
    assert list(importances)[0] == "x" and importances["x"] > 0.9
    assert_real_png(plot.file)
    assert_real_png(curves.file)


def test_the_samples_of_a_large_study_are_the_same_every_time(large, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "IMPORTANCE_TRIALS", 50)
    monkeypatch.setattr(plots, "CURVES", 100)
    first = plots.plot_importances(large, tmp_path / "a.png")
    second = plots.plot_importances(large, tmp_path / "b.png")
    assert first[1] == second[1]
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    plots.plot_intermediate(large, tmp_path / "c.png")
    plots.plot_intermediate(large, tmp_path / "d.png")
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "d.png").read_bytes()
