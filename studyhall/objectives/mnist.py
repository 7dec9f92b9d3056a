"""Keras networks on MNIST: an MLP on the pixels or a small CNN, with epoch-based LR schedules.

Trials are chosen on a validation split carved from the training set (fixed seed, stratified);
the 10,000 test images are scored once, after training (with the best epoch's weights, which
the training loop restores), and stored as the trial's ``test_accuracy`` so a study's winner
is judged on data no trial was selected on. ``save_models`` keeps that model (``_artifacts``).
The network outputs logits (softmax in the loss), so a diverging run shows as a NaN loss and is
stopped. Whatever the training ``loss``, ``test_loss`` is the test images' cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from studyhall.objectives import _artifacts, _keras, trainers
from studyhall.objectives.datasets import Holdout
from studyhall.objectives.mnist_data import MnistSplit, mnist_split, require_mnist
from studyhall.objectives.registry import Hyperparameter as H
from studyhall.objectives.registry import ObjectiveInfo, _add

__all__ = ["build_model", "evaluate", "mnist"]

METRICS = ("val_accuracy", "val_loss")
MODELS = ("mlp", "cnn")
LOSSES = {"crossentropy": "sparse_categorical_logits", "mse": "sparse_categorical_mse",
          "hinge": "sparse_categorical_hinge"}  # names -> _loop.LOSSES
SCHEDULES = ("constant", "time_decay", "exp_decay", "cosine_restarts")  # = schedules.SCHEDULES
# The seed article's weight-initialisation grid, under Keras' own names (zero/normal/uniform are
# Keras aliases of zeros/random_normal/random_uniform), then the rest of Keras' initialisers.
ARTICLE_INITIALIZERS = ("zero", "normal", "uniform", "glorot_normal", "glorot_uniform",
                        "he_normal", "he_uniform", "lecun_uniform")
INITIALIZERS = ARTICLE_INITIALIZERS + tuple(
    i for i in _keras.INITIALIZERS if i not in ARTICLE_INITIALIZERS
)

PARAMS: dict[str, H] = {
    "model": H("str", "cnn", choices=MODELS, help="mlp on the flattened pixels, or a small CNN"),
    "units": H("int", 128, low=1, high=8192, help="units per hidden dense layer"),
    "layers": H("int", 1, low=0, high=16, help="hidden dense layers (after the convolutions)"),
    "filters": H("int", 32, low=1, high=512,
                 help="CNN: filters of the first conv (2x in the second)"),
    "activation": H("str", "relu", choices=_keras.ACTIVATIONS, help="hidden activation"),
    "dropout": H("float", 0.0, low=0.0, high=0.95, help="dropout rate before each dense layer"),
    "kernel_initializer": H("str", "glorot_uniform", choices=INITIALIZERS, help="weight init"),
    "optimizer": H("str", "adam", choices=_keras.OPTIMIZERS, help="optimizer"),
    "learning_rate": H("float", 0.001, low=0.0, low_open=True, help="initial step size lr0"),
    "momentum": H("float", 0.0, low=0.0, high=0.999, help="SGD/RMSprop momentum"),
    "nesterov": H("bool", False, help="Nesterov momentum (SGD)"),
    "schedule": H("str", "constant", choices=SCHEDULES, help="learning-rate schedule over epochs"),
    "decay": H("float", 0.0, low=0.0, help="k of time_decay lr0/(1+kt) and exp_decay lr0*exp(-kt)"),
    "restart_epochs": H("float", 2.0, low=0.0, low_open=True, help="cosine_restarts period"),
    "batch_size": H("int", 128, low=1, high=60000, help="minibatch size"),
    "epochs": H("int", 5, low=1, high=100_000, help="training epochs"),
    "patience": H("int", 0, low=0, help="stop after this many epochs without improvement; 0: off"),
    "metric": H("str", "val_accuracy", choices=METRICS, help="what the trial returns"),
    "loss": H("str", "crossentropy", choices=tuple(LOSSES),
              help="backprop's loss: softmax cross-entropy, mse of the softmax, or hinge"),
    "subset": H("int", 0, low=0, high=60000, help="training images used (stratified); 0: all"),
    "val_size": H("int", 5000, low=100, high=30000, help="validation images carved from training"),
    "split_seed": H("int", 42, low=0, help="seed of the validation split (fixed per study)"),
    **trainers.HYPERPARAMETERS,
    **_artifacts.PARAMS,
}
PARAMS["trainer"] = H("str", "backprop", choices=trainers.TRAINERS,
                      help="how the weights are trained (gradient-free: model mlp only)")


def _check(options: Mapping[str, Any]) -> str | None:
    """Gradient-free trainers search the flat weights of dense layers; a CNN has none."""
    if options.get("trainer", "backprop") != "backprop" and options.get("model", "cnn") == "cnn":
        return (f"trainer {options.get('trainer')!r} needs model: mlp (gradient-free trainers "
                "search dense weights; the cnn trains by backprop only)")
    return None


def build_model(p: Mapping[str, Any]) -> Any:
    """The network of one configuration: 28x28x1 images in, 10 logits out.

    ``mlp``: Flatten, then ``layers`` x (Dropout, Dense). ``cnn``: two 3x3 conv + 2x2 max-pool
    blocks (``filters``, ``2 * filters``), Flatten, then the same dense head. The convolutions
    are ``_conv``'s im2col layers: the same maths as ``Conv2D``, 4-8x faster in the JAX loop.
    """
    k = _keras.keras()
    with _keras.drawn_weights():
        return _build(k, p)


def _build(k: Any, p: Mapping[str, Any]) -> Any:
    init, act = p["kernel_initializer"], p["activation"]
    model = k.Sequential([k.Input((28, 28, 1))])
    if p["model"] == "cnn":
        from studyhall.objectives._conv import Conv3x3, MaxPool2x2

        for filters in (int(p["filters"]), 2 * int(p["filters"])):
            model.add(Conv3x3(filters, activation=act, kernel_initializer=init))
            model.add(MaxPool2x2())
    model.add(k.layers.Flatten())
    for _ in range(int(p["layers"])):
        if p["dropout"] > 0:
            model.add(k.layers.Dropout(float(p["dropout"])))
        model.add(k.layers.Dense(int(p["units"]), activation=act, kernel_initializer=init))
    if p["dropout"] > 0:
        model.add(k.layers.Dropout(float(p["dropout"])))
    model.add(k.layers.Dense(10, kernel_initializer=init))
    return model


def evaluate(model: Any, x: np.ndarray, y: np.ndarray,
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (logits out) on ``(x, y)``, in chunks.

    Chunks bound the memory of the convolutions' activations (10,000 images at once would
    hold ~0.4 GB per conv layer); eager calls reuse the backend's per-op compilations.
    """
    k = _keras.keras()
    total_loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        logits = k.ops.convert_to_numpy(model(x[start:start + batch_size], training=False))
        logits = logits.astype(np.float64)
        labels = y[start:start + batch_size]
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        total_loss += float(np.sum(log_norm - logits[np.arange(len(labels)), labels]))
        correct += float(np.sum(logits.argmax(axis=1) == labels))
    return total_loss / len(x), correct / len(x)


def _data(p: Mapping[str, Any]) -> MnistSplit:
    subset = int(p["subset"]) or None
    return mnist_split(int(p["val_size"]), int(p["split_seed"]), subset)


def mnist(trial: Any, params: Mapping[str, Any]) -> float:
    """Train one configuration; return its best validation metric over the epochs.

    A gradient-free ``trainer`` (hill climbing, differential evolution) trains the MLP's
    weights in numpy instead of backprop; ``epochs`` is then its number of progress reports.

    Raises:
        ValueError: a gradient-free trainer for the CNN.
        DataError: MNIST is not cached (the message says to run ``studyhall data fetch mnist``).
        optuna.TrialPruned: pruned, stopped by the NaN guard (reason in ``pruned_reason``).
    """
    from studyhall.objectives.schedules import make_schedule

    p = {k: h.default for k, h in PARAMS.items()} | dict(params)
    why = _check(p)
    if why:
        raise ValueError(why)
    data = _data(p)  # before any Keras work: a missing cache fails fast
    seed = int(trial.user_attrs.get("seed", 0))
    _keras.new_session(seed)
    model = build_model(p)
    monitor, maximize = p["metric"], p["metric"] == "val_accuracy"
    if p["trainer"] == "backprop":
        batch_size = min(int(p["batch_size"]), len(data.x_train))
        lr = make_schedule(
            p["schedule"],
            float(p["learning_rate"]),
            steps_per_epoch=math.ceil(len(data.x_train) / batch_size),
            decay=float(p["decay"]),
            restart_epochs=float(p["restart_epochs"]),
        )
        optimizer = _keras.make_optimizer(p["optimizer"], lr, float(p["momentum"]),
                                          bool(p["nesterov"]))
        result = _keras.train_reporting(
            trial,
            model,
            optimizer,
            (data.x_train, data.y_train, data.x_val, data.y_val),
            loss=LOSSES[p["loss"]],
            epochs=int(p["epochs"]),
            batch_size=batch_size,
            monitor=monitor,
            maximize=maximize,
            seed=seed,
            patience=int(p["patience"]),
        )
    else:
        net = trainers.Network((28 * 28, *[int(p["units"])] * int(p["layers"]), 10),
                               p["activation"])
        flat = Holdout(data.x_train.reshape(len(data.x_train), -1), data.y_train,
                       data.x_val.reshape(len(data.x_val), -1), data.y_val)
        result, weights = trainers.train(
            trial, net, trainers.flatten(model.get_weights()), flat, trainer=p["trainer"],
            epochs=int(p["epochs"]), monitor=monitor, maximize=maximize,
            settings=trainers.GradientFree.from_params(p), seed=seed,
        )
        model.set_weights(net.unflatten(weights))
        _artifacts.save_trial_model(trial, model, result.value, maximize)
    test_loss, test_accuracy = evaluate(model, data.x_test, data.y_test)
    trial.set_user_attr("test_accuracy", test_accuracy)
    trial.set_user_attr("test_loss", test_loss)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs_trained", len(result.history["loss"]))
    if result.stopped_epoch is not None:
        trial.set_user_attr("stopped_early_at", result.stopped_epoch)
    trial.set_user_attr("val_accuracy", result.history["val_accuracy"][result.best_epoch])
    trial.set_user_attr("val_loss", result.history["val_loss"][result.best_epoch])
    trial.set_user_attr("n_params", int(model.count_params()))
    return result.value


def _directions(options: Mapping[str, Any]) -> tuple[str, ...]:
    metric = options.get("metric", "val_accuracy")
    return ("maximize",) if metric == "val_accuracy" else ("minimize",)


_add(
    ObjectiveInfo(
        name="mnist",
        factory=lambda: mnist,
        params=PARAMS,
        directions=_directions,
        check=_check,
        prepare=_keras.keras,
        require=lambda _options: require_mnist(),
        description="Keras MLP or small CNN on MNIST; validation accuracy or loss, "
                    "test accuracy kept.",
    )
)
