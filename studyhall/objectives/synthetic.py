"""The randomized-optimization articles' experiment: a perceptron or a small MLP on scikit-learn's
``make_classification(n_samples=1000, n_features=5, n_informative=2, n_redundant=1,
random_state=1)``, its weights trained without gradients (hill climbing, differential
evolution) or, for comparison, by backprop.

The data is split 67/33 (stratified, fixed seed) as the articles split it; the 33% is the
validation split every checkpoint is scored on, and ``final_val_accuracy`` is the accuracy of
the weights the trainer ended with (the articles' "test accuracy"). The perceptron is one
linear unit with a step transfer: it predicts ``w.x + b > 0``. A kept model (``save_models``)
is the Keras network with the trained weights; it outputs the logit, whose step is the class.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from studyhall.objectives import _artifacts, _keras, _runs, trainers
from studyhall.objectives.datasets import folds, holdout
from studyhall.objectives.registry import Hyperparameter as H
from studyhall.objectives.registry import ObjectiveInfo, _add

__all__ = ["synthetic"]

METRICS = ("val_accuracy", "val_loss")
MODELS = ("perceptron", "mlp")

PARAMS: dict[str, H] = {
    "model": H("str", "mlp", choices=MODELS, help="perceptron (step transfer) or one hidden layer"),
    "units": H("int", 10, low=1, high=1024, help="mlp: hidden units"),
    "activation": H("str", "sigmoid", choices=tuple(trainers.ACTIVATIONS),
                    help="mlp: hidden activation"),
    "epochs": H("int", 20, low=1, high=100_000,
                help="progress reports (backprop: training epochs)"),
    "metric": H("str", "val_accuracy", choices=METRICS, help="what the trial returns"),
    "learning_rate": H("float", 0.1, low=0.0, low_open=True, help="backprop: optimizer step size"),
    "batch_size": H("int", 32, low=1, high=1000, help="backprop: minibatch size"),
    "optimizer": H("str", "sgd", choices=_keras.OPTIMIZERS, help="backprop: optimizer"),
    "momentum": H("float", 0.0, low=0.0, high=0.999, help="backprop: SGD/RMSprop momentum"),
    "test_size": H("float", 0.33, low=0.05, high=0.5,
                   help="held-out fraction (the articles': 0.33)"),
    "split_seed": H("int", 1, low=0, help="seed of the split and the folds (fixed per study)"),
    **_runs.HYPERPARAMETERS,
    **trainers.HYPERPARAMETERS,
    **_artifacts.PARAMS,
}
PARAMS["trainer"] = H("str", "hill_climb", choices=trainers.TRAINERS,
                      help="how the weights are trained (here hill climbing by default)")


def _network(p: Mapping[str, Any], n_features: int) -> trainers.Network:
    hidden = (int(p["units"]),) if p["model"] == "mlp" else ()
    return trainers.Network((n_features, *hidden, 1), p["activation"])


def _keras_model(net: trainers.Network, weights: np.ndarray | None = None) -> Any:
    """``net`` as a Keras model (logit out), holding ``weights`` when given."""
    model = _keras.build_mlp(net.sizes[0], units=net.sizes[1] if len(net.sizes) > 2 else 1,
                             layers=len(net.sizes) - 2, activation=net.activation, dropout=0.0,
                             output_activation=None)
    if weights is not None:
        model.set_weights(net.unflatten(weights))
    return model


def synthetic(trial: Any, params: Mapping[str, Any]) -> float:
    """Train one perceptron/MLP configuration; return its best validation metric over the
    checkpoints (with ``repeats``/``cv``: of the mean across runs)."""
    p = {k: h.default for k, h in PARAMS.items()} | dict(params)
    cv = int(p["cv"])
    splits = (folds("classification", cv, int(p["split_seed"])) if cv > 1
              else (holdout("classification", float(p["test_size"]), int(p["split_seed"])),))
    runs = _runs.plan(int(trial.user_attrs.get("seed", 0)), int(p["repeats"]), splits, cv=cv > 1)
    monitor, maximize = p["metric"], p["metric"] == "val_accuracy"
    net = _network(p, splits[0].n_features)
    final: dict[int, float] = {}
    models: dict[int, Any] = {}  # backprop: (Keras model, optimizer); else the trained weights

    if p["trainer"] == "backprop":
        for run in runs:  # built in this thread; the runs may train side by side
            _keras.new_session(run.seed)
            models[id(run)] = (
                _keras_model(net),
                _keras.make_optimizer(p["optimizer"], float(p["learning_rate"]),
                                      float(p["momentum"])),
            )

        def train_one(t: Any, run: _runs.Run) -> _keras.FitResult:
            d = run.data
            model, optimizer = models[id(run)]
            result = _keras.train_reporting(
                t, model, optimizer, (d.x_train, d.y_train, d.x_val, d.y_val),
                loss="binary_logits", epochs=int(p["epochs"]), batch_size=int(p["batch_size"]),
                monitor=monitor, maximize=maximize, seed=run.seed,
            )
            final[id(run)] = result.history["val_accuracy"][-1]
            return result
    else:

        def train_one(t: Any, run: _runs.Run) -> _keras.FitResult:
            w0 = net.glorot(np.random.default_rng(run.seed))
            result, weights = trainers.train(
                t, net, w0, run.data, trainer=p["trainer"], epochs=int(p["epochs"]),
                monitor=monitor, maximize=maximize,
                settings=trainers.GradientFree.from_params(p), seed=run.seed,
            )
            final[id(run)] = result.history["val_accuracy"][-1]
            models[id(run)] = weights
            return result

    summary = _runs.run_all(trial, runs, train_one, monitor=monitor, maximize=maximize)
    trial.set_user_attr("best_epoch", summary.best_epoch)
    trial.set_user_attr("val_accuracy", summary.history["val_accuracy"][summary.best_epoch])
    trial.set_user_attr("val_loss", summary.history["val_loss"][summary.best_epoch])
    trial.set_user_attr("final_val_accuracy", float(np.mean([final[id(r)] for r in runs])))
    trial.set_user_attr("n_params", net.n_weights)
    _runs.store(trial, summary, runs)
    first = models[id(runs[0])]
    if p["trainer"] != "backprop":  # Keras is built (and imported) only for a kept model
        _artifacts.save_trial_model(trial, functools.partial(_keras_model, net, first),
                                    summary.value, maximize)
    elif len(runs) > 1:  # a lone backprop run saved its model in train_reporting
        _artifacts.save_trial_model(trial, first[0], summary.value, maximize)
    return summary.value


def _directions(options: Mapping[str, Any]) -> tuple[str, ...]:
    maximize = options.get("metric", "val_accuracy") == "val_accuracy"
    return ("maximize",) if maximize else ("minimize",)


_add(
    ObjectiveInfo(
        name="synthetic",
        factory=lambda: synthetic,
        params=PARAMS,
        directions=_directions,
        description="Perceptron or MLP on make_classification, trained by hill climbing, DE "
        "or backprop.",
    )
)
