"""The synthetic objective (the randomized-optimization articles) and the trainer presets."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from studyhall import SpecError, load_spec, run_study
from studyhall.objectives.datasets import classification
from studyhall.objectives.synthetic import synthetic


def test_the_data_is_the_articles_split_67_33():
    from sklearn.datasets import make_classification

    d = classification()
    assert d.x_train.shape == (670, 5) and d.x_val.shape == (330, 5)
    x, y = make_classification(n_samples=1000, n_features=5, n_informative=2, n_redundant=1,
                               random_state=1)
    assert sorted(np.concatenate([d.y_train, d.y_val])) == sorted(y.astype(np.float32))


def test_a_hill_climbed_mlp_learns_the_problem_and_stores_its_final_accuracy():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    trial.set_user_attr("seed", 5)
    value = synthetic(trial, {"model": "mlp", "iterations": 1500, "step_size": 0.1, "epochs": 5})
    assert value > 0.8
    assert len(trial.study.trials[0].intermediate_values) == 5
    assert 0.75 < trial.user_attrs["final_val_accuracy"] <= value
    assert trial.user_attrs["n_params"] == 5 * 10 + 10 + 10 + 1


@pytest.mark.parametrize("name", ["perceptron-hill-climb", "mlp-hill-climb",
                                  "breast-cancer-trainers", "breast-cancer-grid"])
def test_the_presets_load(name):
    spec = load_spec(name)
    options = dict(spec.objective.options)
    if name.endswith("hill-climb"):
        assert spec.objective.name == "synthetic" and options["trainer"] == "hill_climb"
        assert options["model"] == name.split("-")[0]
    elif name == "breast-cancer-trainers":
        (param,) = spec.space
        assert param.name == "trainer"
        assert set(param.choices) == {"backprop", "hill_climb", "differential_evolution"}
        assert options["repeats"] > 1 and spec.budget == 3
    else:
        assert options["repeats"] > 1 and spec.budget == 216


def test_a_study_with_the_trainer_as_a_categorical_parameter_runs(sqlite_url, study_name):
    handle = run_study({
        "name": study_name,
        "objective": {"name": "synthetic", "model": "perceptron", "epochs": 3, "iterations": 300,
                      "popsize": 5, "maxiter": 6, "learning_rate": 0.1},
        "space": {"trainer": ["hill_climb", "differential_evolution", "backprop"]},
        "sampler": "grid",
        "seed": 1,
    }, storage=sqlite_url)
    trials = handle.trials()
    assert sorted(t.params["trainer"] for t in trials) == [
        "backprop", "differential_evolution", "hill_climb"]
    for t in trials:
        assert t.state.name == "COMPLETE", t.user_attrs
        assert sorted(t.intermediate_values) == [0, 1, 2]
        assert t.value > 0.7


def test_an_unknown_trainer_is_refused_in_one_line():
    spec = {"name": "x", "objective": {"name": "synthetic", "trainer": "annealing"}, "n_trials": 1,
            "space": {"step_size": {"low": 0.01, "high": 1.0}}}
    with pytest.raises(SpecError) as err:
        load_spec(spec, source="studies/x.yaml")
    assert str(err.value) == (
        "`objective.trainer` in studies/x.yaml must be one of backprop, hill_climb, "
        "differential_evolution; got 'annealing'.")


def test_a_hill_climbed_perceptron_is_saved_as_a_keras_model_that_scores_the_same(
        sqlite_url, study_name, tmp_path):
    from studyhall.objectives import _keras
    from studyhall.reports.records import export_model

    handle = run_study({
        "name": study_name,
        "objective": {"name": "synthetic", "model": "perceptron", "epochs": 3,
                      "iterations": 300, "save_models": "all"},
        "space": {"step_size": [0.05, 0.5]},
        "sampler": "grid",
        "seed": 2,
    }, storage=sqlite_url)
    data = classification()
    for trial in handle.trials():
        assert "model_artifact" in trial.user_attrs
        number, path = export_model(handle, tmp_path / str(trial.number), trial=trial.number)
        model = _keras.keras().models.load_model(path)
        assert model.count_params() == trial.user_attrs["n_params"] == 6
        logits = np.asarray(model(data.x_val))[:, 0]  # the step of the logit is the class
        assert np.mean((logits > 0) == (data.y_val > 0.5)) == pytest.approx(trial.value)
