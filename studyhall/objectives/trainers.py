"""Gradient-free training of a small network's weights: stochastic hill climbing and scipy's
differential evolution, as the randomized-optimization articles train a perceptron and an MLP.

The network is evaluated in numpy, vectorised over the rows and, for differential evolution,
over the whole population at once (one batched matmul per layer), never a Python loop over rows.
Progress is reported to the trial at ``epochs`` evenly spaced checkpoints, like backprop's epochs,
so one study can prune and compare every trainer on the same steps; a non-finite training loss
stops the trial (the NaN guard), with the reason in its ``pruned_reason`` user attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from studyhall.objectives._keras import FitResult, _Reporter
from studyhall.objectives.datasets import Holdout
from studyhall.objectives.registry import Hyperparameter as H

__all__ = [
    "FITNESS",
    "HYPERPARAMETERS",
    "TRAINERS",
    "GradientFree",
    "Network",
    "differential_evolution",
    "hill_climb",
    "train",
]

TRAINERS = ("backprop", "hill_climb", "differential_evolution")
FITNESS = ("loss", "accuracy")
MAX_POPULATION_WEIGHTS = 2_000_000
"""Refuse a DE population larger than this many weights in all (popsize x D x weights)."""
HYPERPARAMETERS: dict[str, H] = {
    "trainer": H("str", "backprop", choices=TRAINERS, help="how the weights are trained"),
    "iterations": H("int", 1000, low=1, high=10_000_000,
                    help="hill_climb: perturbation steps in all"),
    "step_size": H("float", 0.1, low=0.0, low_open=True,
                   help="hill_climb: std of each weight's step"),
    "popsize": H("int", 15, low=1, high=1000, help="differential_evolution: members per weight"),
    "maxiter": H("int", 100, low=1, high=1_000_000, help="differential_evolution: generations"),
    "bounds": H("float", 5.0, low=0.0, low_open=True,
                help="differential_evolution: each weight lies in [-bounds, bounds]"),
    "fitness": H("str", "loss", choices=FITNESS,
                 help="gradient-free trainers: the training metric"),
}
"""The trainer choice and the gradient-free trainers' settings, as objective parameters."""
_CHUNK_FLOATS = 1 << 23  # largest hidden activation a population chunk may hold (32 MB float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)  # overflow-free logistic


def _gelu(z: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


_SELU_A, _SELU_S = 1.6732632423543772, 1.0507009873554805
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "selu": lambda z: _SELU_S * np.where(z > 0, z, _SELU_A * np.expm1(np.minimum(z, 0))),
    "gelu": _gelu,
    "swish": lambda z: z * _sigmoid(z),
}
"""Keras' hidden activations (same names, same maths) in numpy."""


@dataclass(frozen=True)
class Network:
    """A dense network ``sizes[0] -> ... -> sizes[-1]`` whose weights are one flat vector.

    The vector holds each layer's kernel (row-major, Keras' ``(inputs, units)`` shape) then its
    bias, layer after layer: the order of ``model.get_weights()`` for a Keras stack of Dense
    layers, so Keras initialises the weights and receives the trained ones. One output is a
    binary logit whose prediction is its step (``z > 0``), so a network with no hidden layer
    is the articles' perceptron with a step transfer function; ``k > 1`` outputs are the
    logits of ``k`` classes (softmax cross-entropy, argmax prediction).
    """

    sizes: tuple[int, ...]
    activation: str = "sigmoid"

    @property
    def n_weights(self) -> int:
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def logits(self, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of every row for every weight vector: ``(P, D)`` weights -> ``(P, n)``
        (one output) or ``(P, n, k)`` (``k`` classes)."""
        w = np.atleast_2d(np.asarray(weights, dtype=x.dtype))
        widest = max(self.sizes[1:]) * len(x)
        step = max(1, _CHUNK_FLOATS // widest)
        if len(w) > step:
            return np.concatenate([self.logits(w[i : i + step], x) for i in range(0, len(w), step)])
        act = ACTIVATIONS[self.activation]
        h: np.ndarray = x[None]
        at = 0
        last = len(self.sizes) - 2
        for layer, (i, o) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            kernel = w[:, at : at + i * o].reshape(len(w), i, o)
            bias = w[:, at + i * o : at + i * o + o]
            at += i * o + o
            h = h @ kernel + bias[:, None, :]
            if layer != last:
                h = act(h)
        return h[..., 0] if self.sizes[-1] == 1 else h

    def glorot(self, rng: np.random.Generator) -> np.ndarray:
        """Keras' default start: Glorot-uniform kernels, zero biases."""
        parts = []
        for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            limit = math.sqrt(6.0 / (i + o))
            parts += [rng.uniform(-limit, limit, i * o), np.zeros(o)]
        return np.concatenate(parts)

    def unflatten(self, weights: np.ndarray) -> list[np.ndarray]:
        """The flat vector as Keras' ``set_weights`` list (kernel, bias, kernel, bias, ...)."""
        out, at = [], 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            out += [weights[at : at + i * o].reshape(i, o), weights[at + i * o : at + i * o + o]]
            at += i * o + o
        return [np.asarray(a, dtype=np.float32) for a in out]


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Keras' ``get_weights()`` list as one float64 vector (the order ``Network`` reads)."""
    return np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)


def log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy on logits per weight vector, stable for any ``z``: binary for
    ``(P, n)`` logits, softmax over the classes for ``(P, n, k)`` logits and integer labels."""
    if z.ndim == 3:
        top = z.max(axis=-1, keepdims=True)
        log_norm = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))
        picked = np.take_along_axis(z, np.broadcast_to(y.astype(np.intp)[None, :, None],
                                                       (*z.shape[:2], 1)), axis=-1)[..., 0]
        return np.mean(log_norm - picked, axis=-1)
    return np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=-1)


def accuracy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of rows predicted right, per weight vector: step(logit) for one output, the
    argmax for ``k`` classes."""
    if z.ndim == 3:
        return np.mean(z.argmax(axis=-1) == y, axis=-1)
    return np.mean((z > 0) == (y > 0.5), axis=-1)


@dataclass(frozen=True)
class GradientFree:
    """The gradient-free trainers' settings (each a hyperparameter an objective exposes).

    Attributes:
        iterations: hill-climbing steps in all.
        step_size: standard deviation of the Gaussian perturbation of every weight.
        popsize, maxiter: scipy's population multiplier and number of generations.
        bounds: differential evolution searches each weight in ``[-bounds, bounds]``.
        fitness: the training metric the trainers optimise: ``loss`` (cross-entropy on the
            logits) or ``accuracy`` (the articles' choice: piecewise constant, so ties are
            accepted and the search drifts across plateaus).
    """

    iterations: int = 1000
    step_size: float = 0.1
    popsize: int = 15
    maxiter: int = 100
    bounds: float = 5.0
    fitness: str = "loss"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> GradientFree:
        return cls(int(p["iterations"]), float(p["step_size"]), int(p["popsize"]),
                   int(p["maxiter"]), float(p["bounds"]), str(p["fitness"]))


class _Progress:
    """Checkpoint bookkeeping: backprop's ``_Reporter`` (same history keys, NaN guard, pruning
    messages) fed the numpy network's metrics, keeping the best checkpoint's weights."""

    def __init__(self, trial: Any, net: Network, data: Holdout, monitor: str,
                 maximize: bool) -> None:
        self.net, self.data = net, data
        self.reporter = _Reporter(trial, monitor, maximize)
        self.history = self.reporter.history
        self.best: np.ndarray | None = None

    def __call__(self, epoch: int, weights: np.ndarray) -> None:
        d = self.data
        z_val = self.net.logits(weights, d.x_val)
        logs = {"loss": float(log_loss(self.net.logits(weights, d.x_train), d.y_train)[0]),
                "val_loss": float(log_loss(z_val, d.y_val)[0]),
                "val_accuracy": float(accuracy(z_val, d.y_val)[0])}
        if self.reporter(epoch, logs):
            self.best = np.array(weights, dtype=np.float64).reshape(-1)


def _fitness(net: Network, data: Holdout, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """Weights ``(P, D)`` -> training cost per vector, lower is better (NaN becomes +inf)."""

    def cost(weights: np.ndarray) -> np.ndarray:
        z = net.logits(weights, data.x_train)
        c = log_loss(z, data.y_train) if kind == "loss" else -accuracy(z, data.y_train)
        return np.where(np.isnan(c), np.inf, c).astype(np.float64)

    return cost


def _checkpoints(total: int, epochs: int) -> list[int]:
    """How many steps have run by the end of each of ``epochs`` reports."""
    return [round((e + 1) * total / epochs) for e in range(epochs)]


def hill_climb(cost: Callable[[np.ndarray], np.ndarray], w0: np.ndarray, *, iterations: int,
               step_size: float, epochs: int, seed: int,
               on_checkpoint: Callable[[int, np.ndarray], None]) -> np.ndarray:
    """Stochastic hill climbing: perturb every weight by N(0, step_size); keep the candidate
    when its cost is not worse. ``on_checkpoint(epoch, weights)`` runs ``epochs`` times, after
    evenly spaced shares of the ``iterations``. Returns the final weights."""
    rng = np.random.default_rng(seed)
    w = np.asarray(w0, dtype=np.float64).copy()
    best = cost(w)[0]
    done = 0
    for epoch, until in enumerate(_checkpoints(iterations, epochs)):
        for _ in range(until - done):
            candidate = w + rng.normal(0.0, step_size, w.shape)
            c = cost(candidate)[0]
            if c <= best:
                w, best = candidate, c
        done = until
        on_checkpoint(epoch, w)
    return w


def differential_evolution(cost: Callable[[np.ndarray], np.ndarray], w0: np.ndarray, *,
                           popsize: int, maxiter: int, bounds: float, epochs: int, seed: int,
                           on_checkpoint: Callable[[int, np.ndarray], None]) -> np.ndarray:
    """scipy's differential evolution over the flat weights in ``[-bounds, bounds]``, the whole
    population costed in one vectorised call per generation; ``w0`` (clipped) is one member.
    ``on_checkpoint(epoch, best weights)`` runs after evenly spaced shares of the ``maxiter``
    generations. Returns the best weights found."""
    from scipy.optimize import differential_evolution as scipy_de

    d = len(w0)
    population = max(popsize * d, 5)
    if population * d > MAX_POPULATION_WEIGHTS:
        raise ValueError(
            f"differential_evolution over {d} weights with popsize {popsize} holds "
            f"{population} x {d} weights; keep popsize x weights^2 <= {MAX_POPULATION_WEIGHTS} "
            "(fewer units, or a smaller popsize)"
        )
    marks = _checkpoints(maxiter, epochs)
    state = {"generation": 0, "reported": 0}

    def report_until(generation: int, weights: np.ndarray) -> None:
        while state["reported"] < epochs and marks[state["reported"]] <= generation:
            on_checkpoint(state["reported"], weights)
            state["reported"] += 1

    def callback(intermediate_result: Any) -> None:
        state["generation"] += 1
        report_until(state["generation"], np.asarray(intermediate_result.x))

    result = scipy_de(
        lambda x: cost(np.asarray(x).T),  # vectorized: x is (D, S), the return (S,)
        [(-bounds, bounds)] * d,
        maxiter=maxiter,
        popsize=popsize,
        tol=0.0,
        rng=np.random.default_rng(seed),
        callback=callback,
        polish=False,
        x0=np.clip(w0, -bounds, bounds),
        updating="deferred",
        vectorized=True,
    )
    # Converged before maxiter: the remaining checkpoints hold the final weights.
    report_until(maxiter, np.asarray(result.x))
    return np.asarray(result.x)


def train(trial: Any, net: Network, w0: np.ndarray, data: Holdout, *, trainer: str,
          epochs: int, monitor: str, maximize: bool, settings: GradientFree,
          seed: int) -> tuple[FitResult, np.ndarray]:
    """Train ``net`` from ``w0`` with a gradient-free ``trainer``, reporting ``epochs``
    checkpoints to ``trial``; return the best checkpoint (as backprop's ``FitResult``) and its
    weights (as backprop's model ends with its best epoch's).

    Raises:
        optuna.TrialPruned: the pruner said so, or the training loss went NaN/inf.
    """
    cost = _fitness(net, data, settings.fitness)
    progress = _Progress(trial, net, data, monitor, maximize)
    if trainer == "hill_climb":
        hill_climb(cost, w0, iterations=settings.iterations, step_size=settings.step_size,
                   epochs=epochs, seed=seed, on_checkpoint=progress)
    elif trainer == "differential_evolution":
        differential_evolution(cost, w0, popsize=settings.popsize, maxiter=settings.maxiter,
                               bounds=settings.bounds, epochs=epochs, seed=seed,
                               on_checkpoint=progress)
    else:
        raise ValueError(f"trainer must be one of {', '.join(TRAINERS[1:])}; got {trainer!r}")
    values = progress.history[monitor]
    pick = max if maximize else min
    best = pick(range(len(values)), key=values.__getitem__)
    assert progress.best is not None  # epochs >= 1: at least one checkpoint ran
    return (FitResult(value=values[best], best_epoch=best, history=progress.history),
            progress.best)
