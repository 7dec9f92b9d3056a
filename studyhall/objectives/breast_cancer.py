"""A Keras MLP on scikit-learn's breast-cancer data: the seed article's experiment.

The metric is the validation accuracy (or loss) of a fixed, stratified holdout, reported every
epoch so pruners can stop a bad configuration early.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studyhall.objectives import _keras
from studyhall.objectives.datasets import breast_cancer as load_breast_cancer
from studyhall.objectives.registry import Hyperparameter as H
from studyhall.objectives.registry import ObjectiveInfo, _add

__all__ = ["breast_cancer"]

METRICS = ("val_accuracy", "val_loss")

PARAMS: dict[str, H] = {
    "units": H("int", 32, low=1, high=4096, help="units per hidden layer"),
    "layers": H("int", 1, low=1, high=16, help="number of hidden layers"),
    "activation": H("str", "relu", choices=_keras.ACTIVATIONS, help="hidden-layer activation"),
    "dropout": H("float", 0.0, low=0.0, high=0.95, help="dropout rate after each hidden layer"),
    "batch_size": H("int", 32, low=1, high=4096, help="minibatch size"),
    "learning_rate": H("float", 0.01, low=0.0, low_open=True, help="optimizer step size"),
    "optimizer": H("str", "sgd", choices=_keras.OPTIMIZERS, help="optimizer"),
    "momentum": H("float", 0.0, low=0.0, high=0.999, help="SGD/RMSprop momentum"),
    "nesterov": H("bool", False, help="Nesterov momentum (SGD)"),
    "kernel_initializer": H("str", "glorot_uniform", choices=_keras.INITIALIZERS, help="weight init"),
    "epochs": H("int", 30, low=1, high=100_000, help="training epochs"),
    "metric": H("str", "val_accuracy", choices=METRICS, help="what the trial returns"),
    "test_size": H("float", 0.2, low=0.05, high=0.5, help="holdout fraction"),
    "split_seed": H("int", 42, low=0, help="seed of the holdout split (fixed per study)"),
}


def breast_cancer(trial: Any, params: Mapping[str, Any]) -> float:
    """Train one MLP configuration; return its best validation metric over the epochs.

    The network outputs a logit (sigmoid applied in the loss): on logits an exploding run
    shows as a NaN loss and is stopped, where a clipped sigmoid loss would hide it.
    """
    p = {k: h.default for k, h in PARAMS.items()} | dict(params)
    data = load_breast_cancer(float(p["test_size"]), int(p["split_seed"]))
    seed = int(trial.user_attrs.get("seed", 0))
    _keras.new_session(seed)
    model = _keras.build_mlp(
        data.n_features,
        units=int(p["units"]),
        layers=int(p["layers"]),
        activation=p["activation"],
        dropout=float(p["dropout"]),
        kernel_initializer=p["kernel_initializer"],
        output_activation=None,
    )
    result = _keras.train_reporting(
        trial,
        model,
        _keras.make_optimizer(
            p["optimizer"], float(p["learning_rate"]), float(p["momentum"]), bool(p["nesterov"])
        ),
        (data.x_train, data.y_train, data.x_val, data.y_val),
        loss="binary_logits",
        epochs=int(p["epochs"]),
        batch_size=int(p["batch_size"]),
        monitor=p["metric"],
        maximize=p["metric"] == "val_accuracy",
        seed=seed,
    )
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("val_accuracy", result.history["val_accuracy"][result.best_epoch])
    trial.set_user_attr("val_loss", result.history["val_loss"][result.best_epoch])
    trial.set_user_attr("n_params", int(model.count_params()))
    return result.value


def _directions(options: Mapping[str, Any]) -> tuple[str, ...]:
    return ("maximize",) if options.get("metric", "val_accuracy") == "val_accuracy" else ("minimize",)


_add(
    ObjectiveInfo(
        name="breast_cancer",
        factory=lambda: breast_cancer,
        params=PARAMS,
        directions=_directions,
        description="Keras MLP on scikit-learn's breast-cancer data; validation accuracy or loss.",
    )
)
