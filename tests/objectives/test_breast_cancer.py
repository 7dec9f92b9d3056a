from __future__ import annotations

import os

import psutil
import pytest

from studyhall import run_study
from studyhall.objectives.datasets import breast_cancer


def spec(name, **extra):
    base = {
        "name": name,
        "objective": {"name": "breast_cancer", "epochs": 3, "batch_size": 32, "units": 16},
        "space": {"learning_rate": [0.0001, 0.05, 1.0e6]},
        "sampler": "grid",
        "seed": 3,
    }
    return {**base, **extra}


def test_the_holdout_is_stratified_standardised_and_fixed():
    d = breast_cancer()
    assert d.x_train.shape == (455, 30) and d.x_val.shape == (114, 30)
    assert d.x_train.dtype == "float32"
    assert abs(float(d.x_train.mean())) < 1e-5
    assert abs(d.y_train.mean() - d.y_val.mean()) < 0.02  # same class balance
    assert (breast_cancer().x_val == d.x_val).all()


def test_a_study_prunes_by_the_pruner_and_by_the_nan_guard(sqlite_url, study_name):
    handle = run_study(
        spec(study_name, pruner={"name": "threshold", "lower": 0.9, "n_warmup_steps": 1}),
        storage=sqlite_url,
    )
    by_lr = {t.params["learning_rate"]: t for t in handle.trials()}
    assert len(by_lr) == 3
    nan = by_lr[1.0e6]
    assert nan.state.name == "PRUNED"
    assert nan.user_attrs["pruned_reason"].startswith("NaN guard: training loss is nan at epoch 0")
    slow = by_lr[0.0001]
    assert slow.state.name == "PRUNED"
    assert slow.user_attrs["pruned_reason"].startswith("pruned at epoch 1 (val_accuracy=")
    good = by_lr[0.05]
    assert good.state.name == "COMPLETE"
    assert good.value >= 0.9


def test_every_epoch_is_reported_and_the_best_epoch_returned(sqlite_url, study_name):
    handle = run_study(spec(study_name, space={"learning_rate": [0.05]}), storage=sqlite_url)
    trial = handle.trials()[0]
    curve = trial.intermediate_values
    assert sorted(curve) == [0, 1, 2]
    assert trial.value == max(curve.values())
    assert curve[trial.user_attrs["best_epoch"]] == trial.value
    assert trial.user_attrs["n_params"] == 30 * 16 + 16 + 16 + 1
    assert 0.0 < trial.user_attrs["val_loss"] < 1.0


def test_the_loss_metric_is_minimised(sqlite_url, study_name):
    s = spec(study_name, space={"learning_rate": [0.05]})
    s["objective"] = {**s["objective"], "metric": "val_loss"}
    handle = run_study(s, storage=sqlite_url)
    assert handle.directions == ("minimize",)
    trial = handle.trials()[0]
    assert trial.value == min(trial.intermediate_values.values())


def test_a_trial_reruns_exactly_from_its_seed(tmp_path):
    values = []
    for run in ("a", "b"):
        handle = run_study(spec("same", space={"learning_rate": [0.05], "dropout": [0.3]}),
                           storage=f"sqlite:///{tmp_path / run}.db")
        values.append(handle.trials()[0].intermediate_values)
    assert values[0] == values[1]


def test_memory_does_not_grow_trial_after_trial(sqlite_url, study_name):
    from studyhall.objectives import _loop

    # As in a fresh worker: earlier tests' compiled shapes would otherwise push this test's 8
    # (units x layers) out of the cache in the middle of the measurement.
    _loop._CACHE.clear()
    process = psutil.Process(os.getpid())
    s = {
        "name": study_name,
        "objective": {"name": "breast_cancer", "epochs": 2, "batch_size": 64},
        "space": {"units": [8, 16, 32, 64], "layers": [1, 2], "dropout": [0.0, 0.3],
                  "learning_rate": {"low": 0.001, "high": 0.1, "log": True}},
        "sampler": "random",
    }
    run_study(s, storage=sqlite_url, n_trials=40)  # warm up: every shape compiled, data loaded
    before = process.memory_info().rss
    run_study(s, storage=sqlite_url, n_trials=160)
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert grown_mb < 40, f"resident memory grew {grown_mb:.0f} MB over 120 trials"


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_accuracy_and_size_as_two_objectives_give_a_pareto_front(sampler, sqlite_url, study_name):
    from studyhall.cli import main

    spec = {
        "name": study_name,
        "objective": {"name": "breast_cancer", "epochs": 3, "metric": "val_accuracy+n_params"},
        "space": {"units": [1, 8, 64], "layers": [1, 2]},
        "directions": ["maximize", "minimize"],
        "sampler": sampler,
        "seed": 1,
        "n_trials": 6,
    }
    handle = run_study(spec, storage=sqlite_url)
    trials = handle.trials(["COMPLETE"])
    assert len(trials) == 6
    for t in trials:  # the second value is the network's size: 30*u + u (+ u*u + u) + u + 1
        u, layers = t.params["units"], t.params["layers"]
        assert t.values[1] == 31 * u + (u * u + u) * (layers - 1) + u + 1
        assert len(t.user_attrs["curve"]) == 3  # Optuna takes no report() here: kept per epoch
    front = {t.number for t in handle.best_trials}
    dominated = [a for a in trials
                 if any(b.values[0] >= a.values[0] and b.values[1] < a.values[1]
                        or b.values[0] > a.values[0] and b.values[1] <= a.values[1]
                        for b in trials)]
    assert front == {t.number for t in trials} - {t.number for t in dominated}
    assert main(["show", study_name, "--storage", sqlite_url]) == 0


def test_a_jax_worker_trains_and_saves_models_without_importing_tensorflow(tmp_path):
    """Keras' serialization would import TensorFlow (5.5 s) just to rule out its types."""
    import subprocess
    import sys

    code = (
        "import sys; from studyhall import run_study; "
        f"h = run_study({spec('no-tf')!r}, storage='sqlite:///{tmp_path}/s.db'); "
        "print('SAVED', sum('model_artifact' in t.user_attrs for t in h.trials())); "
        "print('TF', 'tensorflow' in sys.modules)"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert "TF False" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "SAVED 0" not in result.stdout
