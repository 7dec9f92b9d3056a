from __future__ import annotations

import itertools

import optuna
import pytest

from studyhall import load_spec, run_study
from studyhall.studies.pruners import PRUNERS, build_pruner
from studyhall.studies.samplers import SAMPLERS, build_sampler
from tests.conftest import beale_spec

# Every sampler a spec can name, on Beale, on SQLite; a few trials each (gp is slow per trial).
TRIALS = {"grid": 1000, "gp": 12, "bruteforce": 1000}


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_each_sampler_runs_a_beale_study_on_sqlite(sampler, sqlite_url, study_name):
    spec = beale_spec(study_name, sampler=sampler, n_trials=TRIALS.get(sampler, 20))
    if sampler == "bruteforce":
        spec["space"] = {"x": {"low": -4.5, "high": 4.5, "step": 3.0}, "y": [0.5, 1.0]}
    handle = run_study(spec, storage=sqlite_url)
    counts = handle.state_counts()
    assert counts["FAIL"] == 0
    expected = 8 if sampler == "bruteforce" else TRIALS.get(sampler, 20)
    assert counts["COMPLETE"] == expected


def test_tpe_gets_below_half_in_100_trials(sqlite_url, study_name):
    handle = run_study(beale_spec(study_name, sampler="tpe", n_trials=100), storage=sqlite_url)
    assert handle.best_trial.value < 0.5


def test_the_grid_visits_every_point_exactly_once_and_stops(sqlite_url, study_name):
    spec = beale_spec(study_name, sampler="grid", n_trials=1000)
    handle = run_study(spec, storage=sqlite_url)
    points = [(t.params["x"], t.params["y"]) for t in handle.trials()]
    axis = [-4.5, -3.0, -1.5, 0.0, 1.5, 3.0, 4.5]
    assert sorted(points) == sorted(itertools.product(axis, axis))
    assert len(points) == len(set(points)) == 49
    # A second run finds the grid done and adds nothing.
    assert len(run_study(spec, storage=sqlite_url).trials()) == 49


def test_a_grid_study_with_two_workers_still_visits_each_point_once(sqlite_url, study_name):
    spec = beale_spec(study_name, sampler="grid", n_trials=1000)
    handle = run_study(spec, storage=sqlite_url, workers=2)
    points = [(t.params["x"], t.params["y"]) for t in handle.trials()]
    assert len(points) == len(set(points)) == 49


def test_explicit_grid_values_are_the_points_visited(sqlite_url, study_name):
    spec = {"name": study_name, "objective": "beale", "sampler": "grid",
            "space": {"x": {"low": -4.5, "high": 4.5, "grid": [3.0, 1.0]}, "y": [0.5]}}
    handle = run_study(spec, storage=sqlite_url)
    assert sorted(t.params["x"] for t in handle.trials()) == [1.0, 3.0]
    assert handle.best_trial.value == pytest.approx(0.0)


def test_sampler_options_reach_optuna():
    spec = load_spec({**beale_spec("s"),
                      "sampler": {"name": "tpe", "n_startup_trials": 3, "multivariate": True}})
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, seed=1)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 3
    assert sampler._multivariate is True


@pytest.mark.parametrize("name", PRUNERS)
def test_each_pruner_builds_by_name(name):
    options = {"percentile": {"percentile": 25.0}, "threshold": {"lower": 0.5},
               "patient": {"patience": 2, "wrapped_pruner": "median"}}.get(name, {})
    spec = load_spec({**beale_spec("p"), "pruner": {"name": name, **options}})
    pruner = build_pruner(spec.pruner.name, spec.pruner.options)
    assert isinstance(pruner, optuna.pruners.BasePruner)


def test_a_patient_pruner_wraps_a_configured_pruner():
    pruner = build_pruner("patient", {"patience": 1,
                                      "wrapped_pruner": {"name": "percentile", "percentile": 10.0}})
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.PercentilePruner)


@pytest.mark.parametrize("name", ["median", "percentile"])
def test_median_and_percentile_read_the_complete_trials_once_a_trial_and_decide_as_optuna(
    name, monkeypatch
):
    import random

    from studyhall.studies import pruners

    options = {"n_startup_trials": 2, "n_warmup_steps": 1}
    if name == "percentile":
        options["percentile"] = 30.0
    ours = build_pruner(name, options)
    theirs = {"median": optuna.pruners.MedianPruner,
              "percentile": optuna.pruners.PercentilePruner}[name](**options)
    assert isinstance(ours, type(theirs))
    study = optuna.create_study(direction="maximize")
    rng = random.Random(0)
    reads: list = []
    real = study.get_trials
    monkeypatch.setattr(study, "get_trials", lambda *a, **k: reads.append(1) or real(*a, **k))
    pruned = 0
    for t in range(12):
        trial = study.ask()
        before = len(reads)
        for step in range(10):
            trial.report(rng.random(), step)
            frozen = study._storage.get_trial(trial._trial_id)
            mine = ours.prune(study, frozen)
            reads_of_ours = len(reads)
            assert mine == theirs.prune(study, frozen), (t, step)
            del reads[reads_of_ours:]  # Optuna's own reads are not counted
            pruned += mine
        assert len(reads) - before == 1  # one read a trial, not one per report
        study.tell(trial, rng.random())  # complete: the next trial's first read includes it
    assert pruned > 0  # the comparison covered decisions to prune, not only to go on
    monkeypatch.setattr(pruners, "READ_EVERY_S", 0.0)  # other workers' trials: read again
    trial = study.ask()
    before = len(reads)
    for step in range(3):
        trial.report(rng.random(), step)
        ours.prune(study, study._storage.get_trial(trial._trial_id))
    assert len(reads) - before == 3


def test_a_resumed_grid_study_completes_the_grid_without_repeats(sqlite_url, study_name):
    run_study(beale_spec(study_name, sampler="grid", n_trials=20), storage=sqlite_url)
    handle = run_study(beale_spec(study_name, sampler="grid", n_trials=1000), storage=sqlite_url)
    points = [(t.params["x"], t.params["y"]) for t in handle.trials()]
    assert len(points) == len(set(points)) == 49
