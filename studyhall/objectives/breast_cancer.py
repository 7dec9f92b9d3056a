"""A Keras MLP on scikit-learn's breast-cancer data: the seed article's experiment.

The metric is the validation accuracy (or loss) of a fixed, stratified holdout, reported every
epoch so pruners can stop a bad configuration early. As the grid-search article did it, a
configuration can be trained several times (``repeats``) or cross-validated (``cv``) and judged
by the mean; its weights can be trained by backprop or by a gradient-free ``trainer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studyhall.objectives import _artifacts, _keras, _runs, trainers
from studyhall.objectives.datasets import folds, holdout
from studyhall.objectives.registry import Hyperparameter as H
from studyhall.objectives.registry import ObjectiveInfo, _add

__all__ = ["breast_cancer"]

# val_accuracy+n_params: two objectives, maximise accuracy and minimise the parameter count.
METRICS = ("val_accuracy", "val_loss", "val_accuracy+n_params")

PARAMS: dict[str, H] = {
    "units": H("int", 32, low=1, high=4096, help="units per hidden layer"),
    "layers": H("int", 1, low=1, high=16, help="number of hidden layers"),
    "activation": H("str", "relu", choices=_keras.ACTIVATIONS, help="hidden-layer activation"),
    "dropout": H("float", 0.0, low=0.0, high=0.95,
                 help="dropout rate after each hidden layer (backprop)"),
    "batch_size": H("int", 32, low=1, high=4096, help="minibatch size"),
    "learning_rate": H("float", 0.01, low=0.0, low_open=True, help="optimizer step size"),
    "optimizer": H("str", "sgd", choices=_keras.OPTIMIZERS, help="optimizer"),
    "momentum": H("float", 0.0, low=0.0, high=0.999, help="SGD/RMSprop momentum"),
    "nesterov": H("bool", False, help="Nesterov momentum (SGD)"),
    "kernel_initializer": H("str", "glorot_uniform", choices=_keras.INITIALIZERS,
                            help="weight init"),
    "epochs": H("int", 30, low=1, high=100_000,
                help="training epochs (gradient-free trainers: progress reports)"),
    "metric": H("str", "val_accuracy", choices=METRICS, help="what the trial returns"),
    "test_size": H("float", 0.2, low=0.05, high=0.5, help="holdout fraction"),
    "split_seed": H("int", 42, low=0,
                    help="seed of the holdout split and the folds (fixed per study)"),
    **_runs.HYPERPARAMETERS,
    **trainers.HYPERPARAMETERS,
    **_artifacts.PARAMS,
}


def _splits(p: Mapping[str, Any]) -> tuple[Any, ...]:
    if int(p["cv"]) > 1:
        return folds("breast_cancer", int(p["cv"]), int(p["split_seed"]))
    return (holdout("breast_cancer", float(p["test_size"]), int(p["split_seed"])),)


def breast_cancer(trial: Any, params: Mapping[str, Any]) -> float | tuple[float, float]:
    """Train one MLP configuration; return its best validation metric over the epochs (with
    ``repeats``/``cv``: the best epoch of the mean across runs, and the runs' spread as user
    attributes ``std``, ``repeat_values``, ``fold_values``).

    The network outputs a logit (sigmoid applied in the loss): on logits an exploding run
    shows as a NaN loss and is stopped, where a clipped sigmoid loss would hide it.
    """
    p = {k: h.default for k, h in PARAMS.items()} | dict(params)
    runs = _runs.plan(int(trial.user_attrs.get("seed", 0)), int(p["repeats"]), _splits(p),
                      cv=int(p["cv"]) > 1)
    monitor = p["metric"].split("+")[0]
    maximize = monitor == "val_accuracy"
    trainer = p["trainer"]
    # Models are built here, in the calling thread, one Keras session per run (its seed): the
    # runs may then train side by side.
    models = {}
    for run in runs:
        _keras.new_session(run.seed)
        model = _keras.build_mlp(
            run.data.n_features,
            units=int(p["units"]),
            layers=int(p["layers"]),
            activation=p["activation"],
            dropout=float(p["dropout"]) if trainer == "backprop" else 0.0,
            kernel_initializer=p["kernel_initializer"],
            output_activation=None,
        )
        optimizer = (
            _keras.make_optimizer(p["optimizer"], float(p["learning_rate"]),
                                  float(p["momentum"]), bool(p["nesterov"]))
            if trainer == "backprop" else None
        )
        models[id(run)] = (model, optimizer)
    net = trainers.Network(
        (runs[0].data.n_features, *[int(p["units"])] * int(p["layers"]), 1), p["activation"]
    )
    trained: dict[int, Any] = {}

    def train_one(t: Any, run: _runs.Run) -> _keras.FitResult:
        model, optimizer = models[id(run)]
        d = run.data
        if trainer == "backprop":
            return _keras.train_reporting(
                t, model, optimizer, (d.x_train, d.y_train, d.x_val, d.y_val),
                loss="binary_logits", epochs=int(p["epochs"]), batch_size=int(p["batch_size"]),
                monitor=monitor, maximize=maximize, seed=run.seed,
            )
        result, weights = trainers.train(
            t, net, trainers.flatten(model.get_weights()), d, trainer=trainer,
            epochs=int(p["epochs"]), monitor=monitor, maximize=maximize,
            settings=trainers.GradientFree.from_params(p), seed=run.seed,
        )
        trained[id(run)] = weights
        return result

    summary = _runs.run_all(trial, runs, train_one, monitor=monitor, maximize=maximize)
    for run in runs:  # the Keras models hold what the gradient-free trainers found
        if id(run) in trained:
            models[id(run)][0].set_weights(net.unflatten(trained[id(run)]))
    trial.set_user_attr("best_epoch", summary.best_epoch)
    trial.set_user_attr("val_accuracy", summary.history["val_accuracy"][summary.best_epoch])
    trial.set_user_attr("val_loss", summary.history["val_loss"][summary.best_epoch])
    first = models[id(runs[0])][0]
    trial.set_user_attr("n_params", int(first.count_params()))
    _runs.store(trial, summary, runs)
    if len(runs) > 1 or trainer != "backprop":
        # A lone backprop run saved its model in train_reporting; runs in threads save nothing
        # (see _runs), so the first run's model (the trial's own seed) is saved here.
        _artifacts.save_trial_model(trial, first, summary.value, maximize)
    if p["metric"] == "val_accuracy+n_params":
        return summary.value, float(first.count_params())
    return summary.value


def _directions(options: Mapping[str, Any]) -> tuple[str, ...]:
    metric = options.get("metric", "val_accuracy")
    if metric == "val_accuracy+n_params":
        return ("maximize", "minimize")
    return ("maximize",) if metric == "val_accuracy" else ("minimize",)


_add(
    ObjectiveInfo(
        name="breast_cancer",
        factory=lambda: breast_cancer,
        params=PARAMS,
        directions=_directions,
        prepare=_keras.keras,
        description="Keras MLP on scikit-learn's breast-cancer data; validation accuracy or loss.",
    )
)
