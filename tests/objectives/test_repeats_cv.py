"""Repetitions and cross-validation inside one trial, as the grid-search article did it."""

from __future__ import annotations

import numpy as np
import pytest

from studyhall import SpecError, load_spec, run_study
from studyhall.objectives.datasets import folds


def spec(name, **options):
    return {
        "name": name,
        "objective": {"name": "breast_cancer", "epochs": 3, "batch_size": 32, "units": 8,
                      "learning_rate": 0.05, **options},
        "space": {"dropout": [0.0]},
        "sampler": "grid",
        "seed": 3,
    }


def test_repeats_train_k_times_and_store_the_mean_and_the_spread(sqlite_url, study_name):
    handle = run_study(spec(study_name, repeats=3, metric="val_loss"), storage=sqlite_url)
    (trial,) = handle.trials()
    values = trial.user_attrs["repeat_values"]
    assert trial.user_attrs["n_runs"] == 3 and len(values) == 3
    assert len(set(values)) == 3  # three seeds, three different networks
    assert trial.value == pytest.approx(np.mean(values))
    assert trial.user_attrs["std"] == pytest.approx(np.std(values))
    assert trial.value == min(trial.intermediate_values.values())  # the mean curve's best epoch
    assert sorted(trial.intermediate_values) == [0, 1, 2]
    assert "model_artifact" in trial.user_attrs  # the first run's model, saved once


def test_cv_trains_on_every_fold_and_stores_each_folds_value(sqlite_url, study_name):
    handle = run_study(spec(study_name, cv=4), storage=sqlite_url)
    (trial,) = handle.trials()
    per_fold = trial.user_attrs["fold_values"]
    assert len(per_fold) == 4 and trial.user_attrs["n_runs"] == 4
    assert all(0.8 < v <= 1.0 for v in per_fold)
    assert trial.value == pytest.approx(np.mean(per_fold))
    assert "repeat_values" not in trial.user_attrs


def test_the_folds_are_stratified_and_cover_the_data_once():
    k = folds("breast_cancer", 5, 42)
    assert len(k) == 5
    assert sum(len(f.y_val) for f in k) == 569
    assert all(len(f.y_train) + len(f.y_val) == 569 for f in k)
    shares = [f.y_val.mean() for f in k]
    assert max(shares) - min(shares) < 0.02
    assert folds("breast_cancer", 5, 42) is k  # cached: the same arrays in every trial


def test_the_pruner_judges_the_mean_across_runs_each_epoch(sqlite_url, study_name):
    s = spec(study_name, repeats=4)
    s["pruner"] = {"name": "threshold", "lower": 0.999, "n_warmup_steps": 1}
    handle = run_study(s, storage=sqlite_url)
    (trial,) = handle.trials()
    assert trial.state.name == "PRUNED"
    assert sorted(trial.intermediate_values) == [0, 1]
    assert trial.user_attrs["pruned_reason"] == (
        f"pruned at epoch 1 (mean val_accuracy={trial.intermediate_values[1]:.4g} over 4 runs)")


def test_a_diverging_run_is_stopped_by_the_nan_guard_and_named(sqlite_url, study_name):
    handle = run_study(spec(study_name, repeats=2, learning_rate=1.0e6), storage=sqlite_url)
    (trial,) = handle.trials()
    assert trial.state.name == "PRUNED"
    reason = trial.user_attrs["pruned_reason"]
    assert reason.startswith("NaN guard: training loss is nan at epoch 0 (repeat ")


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("repeats", 0, "must be >= 1"),
    ("cv", 50, "must be <= 20"),
    ("repeats", 2.5, "must be of type int"),
])
def test_bad_repeats_or_cv_are_refused_in_one_line(option, value, allowed):
    with pytest.raises(SpecError) as err:
        load_spec(spec("x", **{option: value}), source="studies/bc.yaml")
    assert str(err.value) == f"`objective.{option}` in studies/bc.yaml {allowed}; got {value!r}."


def test_runs_meet_every_epoch_and_the_trial_sees_their_mean():
    import optuna

    from studyhall.objectives import _runs
    from studyhall.objectives._keras import FitResult

    curves = {0: [0.5, 0.7, 0.6], 1: [0.7, 0.9, 0.8], 2: [0.6, 0.8, 0.9]}

    def train_one(trial, run):
        history = {"loss": [], "val_loss": [], "val_accuracy": []}
        for epoch, value in enumerate(curves[run.repeat]):
            for key in history:
                history[key].append(value)
            trial.report(value, epoch)
            assert not trial.should_prune()
        return FitResult(value=max(history["val_accuracy"]), best_epoch=0, history=history)

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    runs = _runs.plan(7, 3, [None], cv=False)
    assert runs[0].seed == 7 and len({r.seed for r in runs}) == 3
    summary = _runs.run_all(trial, runs, train_one, monitor="val_accuracy", maximize=True)
    means = [pytest.approx(np.mean([c[e] for c in curves.values()])) for e in range(3)]
    assert list(study.trials[0].intermediate_values.values()) == means
    assert summary.best_epoch == 1 and summary.value == pytest.approx(0.8)
    assert summary.values == pytest.approx((0.7, 0.9, 0.8))
