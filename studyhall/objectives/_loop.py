"""A compiled training loop for Keras models on the JAX backend.

``model.fit`` spends almost all of a small network's time on per-epoch setup, callbacks and a
separate validation pass, and compiles new step functions for every model. Here one epoch (shuffle,
every minibatch step, validation) is one jitted call on data kept on the device, and the compiled
epoch is reused by every later trial whose network has the same shape: learning rate, momentum
and weights are arguments, not constants. The model is still a Keras model (built, initialised and
saved by Keras; ``model.stateless_call`` and ``optimizer.stateless_apply`` do the maths), so the
result is the model ``fit`` would train, minus the overhead.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EpochLogs", "LOSSES", "train"]

LOSSES = ("binary_logits", "sparse_categorical_logits", "sparse_categorical_mse",
          "sparse_categorical_hinge")
"""Losses on logits: binary cross-entropy; for integer class labels, softmax cross-entropy,
squared error of the softmax against the one-hot label, or Crammer-Singer (Keras' categorical)
hinge."""

# Compiled epochs by network signature; bounded so a study over many shapes cannot grow memory
# without limit (measured: +450 MB over 120 trials of ~120 shapes when only this dict was capped).
# 16, not 32: the peak resident memory of 200 breast-cancer-tpe trials fell from 973 to 762 MB;
# a shape evicted and met again loads from the persistent compile cache.
_MAX_CACHED = 16
_CACHE: dict[str, Callable[..., Any]] = {}
# Below this many multiply-adds per epoch (~6 per weight and training row, 2 per validation row)
# XLA compiles without LLVM's optimisations: measured on a 30-64-1 breast-cancer MLP, compiling
# took 0.26-0.68 s instead of 1.4-2.2 s, and 30 epochs then ran 0.06-0.09 s instead of 0.03 s.
# A new network shape costs a compile, so over a search that meets many shapes, small networks
# spend far more on compiling than on running. Bigger networks (MNIST) keep full optimisation.
UNOPTIMIZED_BELOW = 20_000_000
_DEVICE_DATA: dict[int, Any] = {}


@dataclass(frozen=True)
class EpochLogs:
    """What one epoch measured (the keys ``fit`` would log)."""

    epoch: int
    loss: float
    val_loss: float
    val_accuracy: float

    def __getitem__(self, key: str) -> float:
        return float(getattr(self, key))


def _strip_names(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, list):
        return [_strip_names(v) for v in value]
    return value


def _signature(model: Any, optimizer: Any, loss: str, batch_size: int, n: int, n_val: int) -> str:
    opt = optimizer.get_config()
    opt.pop("name", None)
    if isinstance(opt.get("learning_rate"), (int, float)):
        # A constant rate is an optimizer variable (an argument of the compiled epoch); a
        # schedule is code, and stays in the signature.
        opt.pop("learning_rate")
    return json.dumps(
        [_strip_names(model.get_config()), type(optimizer).__name__, opt, loss, batch_size, n, n_val],
        sort_keys=True,
        default=str,
    )


def _losses(loss: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Per-example loss and correctness on logits, written for numerical stability."""
    import jax
    import jax.numpy as jnp

    def binary(y: Any, z: Any) -> Any:
        z = z[:, 0]
        return jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))

    def binary_correct(y: Any, z: Any) -> Any:
        return ((z[:, 0] > 0) == (y > 0.5)).astype("float32")

    def one_hot(y: Any, z: Any) -> Any:
        return jax.nn.one_hot(y.astype("int32"), z.shape[-1], dtype=z.dtype)

    def crossentropy(y: Any, z: Any) -> Any:
        y = y.astype("int32")
        return jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]

    def mse(y: Any, z: Any) -> Any:
        return jnp.mean((jax.nn.softmax(z, axis=-1) - one_hot(y, z)) ** 2, axis=-1)

    def hinge(y: Any, z: Any) -> Any:  # Keras' categorical_hinge, term for term
        t = one_hot(y, z)
        return jnp.maximum(0.0, 1.0 + jnp.max((1 - t) * z, axis=-1) - jnp.sum(t * z, axis=-1))

    def correct(y: Any, z: Any) -> Any:
        return (jnp.argmax(z, axis=-1) == y.astype("int32")).astype("float32")

    if loss == "binary_logits":
        return binary, binary_correct
    per_example = {"sparse_categorical_logits": crossentropy, "sparse_categorical_mse": mse,
                   "sparse_categorical_hinge": hinge}[loss]
    return per_example, correct


def _compile(model: Any, optimizer: Any, loss: str, batch_size: int, n: int,
             n_val: int) -> Callable[..., Any]:
    import jax
    import jax.numpy as jnp

    per_example, correct = _losses(loss)
    n_batches = math.ceil(n / batch_size)
    pad = n_batches * batch_size - n
    mask = (np.arange(n_batches * batch_size) < n).astype("float32").reshape(n_batches, batch_size)

    def batch_loss(trainable: Any, non_trainable: Any, x: Any, y: Any, w: Any) -> Any:
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        total = jnp.sum(per_example(y, logits) * w)
        return total / jnp.maximum(jnp.sum(w), 1.0), (non_trainable, total)

    grad = jax.value_and_grad(batch_loss, has_aux=True)

    def step(carry: Any, batch: Any) -> Any:
        trainable, non_trainable, opt_vars = carry
        x, y, w = batch
        (_, (non_trainable, total)), grads = grad(trainable, non_trainable, x, y, w)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), total

    def epoch(trainable: Any, non_trainable: Any, opt_vars: Any, order: Any, x: Any, y: Any,
              x_val: Any, y_val: Any) -> Any:
        if pad:
            order = jnp.concatenate([order, order[:pad]])  # padded rows carry zero weight
        xb = x[order].reshape((n_batches, batch_size) + x.shape[1:])
        yb = y[order].reshape((n_batches, batch_size) + y.shape[1:])
        (trainable, non_trainable, opt_vars), totals = jax.lax.scan(
            step, (trainable, non_trainable, opt_vars), (xb, yb, jnp.asarray(mask))
        )
        logits, _ = model.stateless_call(trainable, non_trainable, x_val, training=False)
        val_loss = jnp.mean(per_example(y_val, logits))
        val_acc = jnp.mean(correct(y_val, logits))
        return trainable, non_trainable, opt_vars, jnp.sum(totals) / n, val_loss, val_acc

    work = model.count_params() * (6 * n + 2 * n_val)
    options = {"xla_backend_optimization_level": 0} if work < UNOPTIMIZED_BELOW else None
    return jax.jit(epoch, donate_argnums=(0, 1, 2), compiler_options=options)


def _on_device(array: np.ndarray) -> Any:
    # Data sets are cached per process (lru_cache), so their ids are stable: transfer once.
    import jax.numpy as jnp

    key = id(array)
    if key not in _DEVICE_DATA:
        _DEVICE_DATA[key] = (array, jnp.asarray(array))
    return _DEVICE_DATA[key][1]


def train(
    model: Any,
    optimizer: Any,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    loss: str,
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[EpochLogs], bool | None],
) -> None:
    """Train ``model`` for ``epochs``, calling ``on_epoch(logs)`` after each.

    ``on_epoch`` returns true when this epoch is the best so far: its weights are copied, and
    the model ends with the best epoch's weights (the last epoch's when none was marked).
    ``on_epoch`` may raise (pruning, NaN guard, early stopping) to stop; the model's variables
    then hold the best weights seen so far as well.
    """
    import jax

    x, y, x_val, y_val = data
    batch_size = min(batch_size, len(x))
    optimizer.build(model.trainable_variables)
    key = _signature(model, optimizer, loss, batch_size, len(x), len(x_val))
    fn = _CACHE.get(key)
    if fn is None:
        if len(_CACHE) >= _MAX_CACHED:
            # Start over rather than evict one: JAX keeps executables (and the models their
            # closures hold) in its own caches too, so only a full clear returns the memory.
            _CACHE.clear()
            gc.collect()
            jax.clear_caches()
        fn = _CACHE[key] = _compile(model, optimizer, loss, batch_size, len(x), len(x_val))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    opt_vars = [v.value for v in optimizer.variables]
    dx, dy, dxv, dyv = (_on_device(a) for a in (x, y, x_val, y_val))
    # The shuffle is drawn here, not in the compiled epoch: jax.random.permutation is a sort
    # network that took XLA longer to compile than the whole rest of the epoch.
    rng = np.random.default_rng(seed)
    best: tuple[list[Any], list[Any]] | None = None
    try:
        for e in range(epochs):
            order = rng.permutation(len(x)).astype(np.int32)
            trainable, non_trainable, opt_vars, tl, vl, va = fn(
                trainable, non_trainable, opt_vars, order, dx, dy, dxv, dyv
            )
            logs = EpochLogs(e, float(tl), float(vl), float(va))
            if on_epoch(logs):
                # A host copy: the device buffers are donated to (and freed by) the next epoch.
                best = ([np.array(a) for a in trainable], [np.array(a) for a in non_trainable])
    finally:
        if best is not None:
            trainable, non_trainable = best
        for var, value in zip(model.trainable_variables, trainable):
            var.assign(value)
        for var, value in zip(model.non_trainable_variables, non_trainable):
            var.assign(value)
        # The optimizer's state too (step counter, momenta): a later call continues where this
        # one stopped, and ``optimizer.iterations``/``learning_rate`` tell where training got.
        for var, value in zip(optimizer.variables, opt_vars):
            var.assign(value)
