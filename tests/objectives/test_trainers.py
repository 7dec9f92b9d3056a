"""Gradient-free trainers: hill climbing and differential evolution on numpy networks."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from studyhall.objectives import trainers
from studyhall.objectives.datasets import breast_cancer, classification


def _trial(pruner=None):
    study = optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner())
    return study.ask()


def _cost(net, data):
    return lambda w: trainers.log_loss(net.logits(w, data.x_train), data.y_train)


def test_hill_climbing_improves_a_random_start():
    data = classification()
    net = trainers.Network((5, 10, 1), "sigmoid")
    w0 = np.random.default_rng(0).normal(0.0, 2.0, net.n_weights)
    cost = _cost(net, data)
    seen = []
    w = trainers.hill_climb(cost, w0, iterations=600, step_size=0.1, epochs=6, seed=1,
                            on_checkpoint=lambda e, w: seen.append((e, float(cost(w)[0]))))
    assert [e for e, _ in seen] == list(range(6))
    costs = [c for _, c in seen]
    assert costs == sorted(costs, reverse=True)  # a candidate is kept only if not worse
    assert cost(w)[0] < 0.8 * cost(w0)[0]
    acc = trainers.accuracy(net.logits(np.stack([w0, w]), data.x_train), data.y_train)
    assert acc[1] > acc[0] + 0.1


def test_differential_evolution_finds_better_than_random_weights():
    data = classification()
    net = trainers.Network((5, 1))  # the perceptron: 6 weights
    cost = _cost(net, data)
    rng = np.random.default_rng(0)
    random_weights = rng.uniform(-3.0, 3.0, (200, net.n_weights))
    best_random = float(cost(random_weights).min())  # 200 vectors costed in one call
    seen = []
    w = trainers.differential_evolution(cost, random_weights[0], popsize=10, maxiter=40,
                                        bounds=3.0, epochs=4, seed=0,
                                        on_checkpoint=lambda e, w: seen.append(e))
    assert seen == [0, 1, 2, 3]
    assert np.all(np.abs(w) <= 3.0)
    assert cost(w)[0] < best_random
    assert trainers.accuracy(net.logits(w, data.x_val), data.y_val)[0] > 0.8


def test_a_population_is_costed_at_once_as_each_vector_alone():
    data = breast_cancer()
    net = trainers.Network((30, 8, 4, 1), "relu")
    pop = np.random.default_rng(3).normal(0.0, 0.3, (64, net.n_weights))
    together = net.logits(pop, data.x_train)
    alone = np.stack([net.logits(w, data.x_train)[0] for w in pop])
    assert together.shape == (64, len(data.x_train))
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_the_numpy_network_computes_what_the_keras_model_does():
    from studyhall.objectives import _keras

    data = breast_cancer()
    _keras.new_session(0)
    model = _keras.build_mlp(30, units=6, layers=2, activation="tanh", dropout=0.0,
                             output_activation=None)
    net = trainers.Network((30, 6, 6, 1), "tanh")
    w = trainers.flatten(model.get_weights())
    assert len(w) == net.n_weights == model.count_params()
    expected = np.asarray(model(data.x_val[:50]))[:, 0]
    np.testing.assert_allclose(net.logits(w, data.x_val[:50])[0], expected, rtol=1e-4, atol=1e-5)
    model.set_weights(net.unflatten(w * 2))
    np.testing.assert_allclose(trainers.flatten(model.get_weights()), w * 2, rtol=1e-6)


def test_a_ten_class_network_matches_keras_logits_loss_and_accuracy():
    from studyhall.objectives import _keras

    keras = _keras.keras()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    y = rng.integers(0, 10, 40).astype(np.int32)
    _keras.new_session(0)
    model = _keras.build_mlp(12, units=7, layers=1, activation="relu", dropout=0.0, outputs=10,
                             output_activation=None)
    net = trainers.Network((12, 7, 10), "relu")
    w = trainers.flatten(model.get_weights())
    z = net.logits(np.stack([w, w * 3]), x)
    assert z.shape == (2, 40, 10)
    np.testing.assert_allclose(z[0], np.asarray(model(x)), rtol=1e-4, atol=1e-5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for k in (0, 1):
        assert trainers.log_loss(z, y)[k] == pytest.approx(float(loss(y, z[k])), rel=1e-5)
    assert trainers.accuracy(z, y)[0] == np.mean(np.argmax(z[0], axis=1) == y)


def test_hill_climbing_lowers_a_ten_class_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = (x[:, :5].argmax(axis=1) * 2).astype(np.int32)  # 5 of the 10 classes, linearly separable
    net = trainers.Network((8, 10))
    cost = lambda w: trainers.log_loss(net.logits(w, x), y)  # noqa: E731
    w0 = net.glorot(rng)
    w = trainers.hill_climb(cost, w0, iterations=400, step_size=0.05, epochs=2, seed=1,
                            on_checkpoint=lambda e, w: None)
    assert cost(w)[0] < 0.7 * cost(w0)[0]
    assert trainers.accuracy(net.logits(w, x), y)[0] > 0.6


def test_progress_is_reported_each_checkpoint_and_the_pruner_stops_it():
    trial = _trial(optuna.pruners.ThresholdPruner(lower=0.99))
    net = trainers.Network((5, 1))
    w0 = net.glorot(np.random.default_rng(0))
    with pytest.raises(optuna.TrialPruned):
        trainers.train(trial, net, w0, classification(), trainer="hill_climb", epochs=5,
                       monitor="val_accuracy", maximize=True,
                       settings=trainers.GradientFree(iterations=100), seed=0)
    assert trial.user_attrs["pruned_reason"].startswith("pruned at epoch 0 (val_accuracy=0.")


def test_the_nan_guard_stops_a_run_whose_loss_is_not_finite():
    trial = _trial()
    net = trainers.Network((5, 1))
    w0 = np.full(net.n_weights, np.nan)
    with pytest.raises(optuna.TrialPruned):
        trainers.train(trial, net, w0, classification(), trainer="hill_climb", epochs=2,
                       monitor="val_accuracy", maximize=True,
                       settings=trainers.GradientFree(iterations=10), seed=0)
    assert trial.user_attrs["pruned_reason"] == "NaN guard: training loss is nan at epoch 0"


def test_a_population_too_large_is_refused_with_the_numbers():
    net = trainers.Network((30, 512, 1))
    with pytest.raises(ValueError,
                       match=r"over 16385 weights with popsize 15 .* popsize x weights\^2"):
        trainers.differential_evolution(lambda w: np.zeros(len(w)), np.zeros(net.n_weights),
                                        popsize=15, maxiter=1, bounds=1.0, epochs=1, seed=0,
                                        on_checkpoint=lambda e, w: None)


def test_breast_cancer_trains_its_keras_mlp_without_gradients(sqlite_url, study_name):
    from studyhall import run_study

    handle = run_study({
        "name": study_name,
        "objective": {"name": "breast_cancer", "units": 2, "epochs": 2, "iterations": 200,
                      "step_size": 0.05, "popsize": 3, "maxiter": 6, "bounds": 2.0},
        "space": {"trainer": ["hill_climb", "differential_evolution"]},
        "sampler": "grid",
        "seed": 4,
    }, storage=sqlite_url)
    for t in handle.trials():
        assert t.state.name == "COMPLETE", t.user_attrs
        assert t.value > 0.85 and sorted(t.intermediate_values) == [0, 1]
        assert t.user_attrs["n_params"] == 30 * 2 + 2 + 2 + 1
        assert "model_artifact" in t.user_attrs  # the Keras model holds the trained weights
