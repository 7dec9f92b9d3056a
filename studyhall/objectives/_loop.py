"""A compiled training loop for Keras models on the JAX backend.

``model.fit`` spends almost all of a small network's time on per-epoch setup, callbacks and a
separate validation pass, and compiles new step functions for every model. Here one epoch (shuffle,
every minibatch step, validation) is one jitted call on data kept on the device, and the compiled
epoch is reused by every later trial whose network has the same shape: learning rate and weights
are arguments, not constants. The model is still a Keras model (built, initialised and saved by
Keras; ``optimizer.stateless_apply`` and ``model.stateless_call`` do the maths), so the result is
the model ``fit`` would train, minus the overhead.

A plain perceptron (``Dense`` layers, each optionally after a ``Dropout``, maybe a ``Flatten``
first: what ``build_mlp`` and the MNIST MLP make) runs through a forward pass of our own instead of
``stateless_call``, with its dropout rates and its activations (linear or relu) as arguments
too: one compiled epoch then serves all of those and every initializer. On the seed
article's space that is 9 compiled shapes (units x batch size) instead of 54; with a continuous
dropout rate (``breast-cancer-tpe``) no longer nearly one per trial.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
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

# Compiled epochs by network signature, least recently used first, each with its number of
# layers with weights. Bounded so a study over many shapes cannot grow a worker without limit:
# an executable's memory grows with its layers (measured here: 4.6 MB for one Dense layer and an
# output layer, 8.1 MB for three and Adam), so the bound counts layers, not executables: 18
# keeps all 9 shapes of the seed article's grid, and 200 breast-cancer-tpe trials (most of them
# a new shape, of 2-4 layers) stay within 100 MB of the first (benchmarks, P5). A shape evicted and
# met again loads from the persistent compile cache: 0.3 s instead of a 0.8 s compile, when
# 20 epochs of it run in 0.08 s; a cap of 8 executables made the grid 14% slower than 9.
_CACHE_LAYERS = 18
_CACHE: OrderedDict[str, tuple[Any, int]] = OrderedDict()
# Below this many multiply-adds per epoch (~6 per weight and training row, 2 per validation row)
# an epoch compiles with cheaper settings: a new shape costs a compile, and over a search that
# meets many shapes small networks spend more on compiling than on running. These are XLA's
# classic loop emitters instead of its MLIR fusion emitters, and LLVM at level 1 instead of 2.
# Measured on the seed grid's 9 breast-cancer shapes (30-{1,32,64}-1, batch 4/16/32; one
# process per setting, alternated twice): 0.50-0.51 s a compile and 7.1-8.4 ms for one epoch
# of each of the 9, where XLA's defaults took 1.11-1.17 s and 5.5-6.3 ms and LLVM at level 0
# (this module's earlier choice) 0.68-0.71 s and 15.1-15.8 ms. Bigger networks (MNIST) keep
# XLA's defaults.
SMALL_BELOW = 20_000_000
# The first that this XLA knows is used; the second for one without the emitter switch. Both
# keep Eigen single-threaded, as ``limit_threads`` does for N workers: a small network's matrix
# products gain nothing from a second thread (one worker ran 216 trials as fast either way),
# and a compiled epoch that does not depend on that flag serves one worker and N alike.
_SMALL_OPTIONS: list[dict[str, Any]] = [
    {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False,
     "xla_cpu_multi_thread_eigen": False},
    {"xla_backend_optimization_level": 0, "xla_cpu_multi_thread_eigen": False},
]
_DEVICE_DATA: dict[int, Any] = {}


def _stored_options(small: bool) -> list[dict[str, Any] | None]:
    """The compile options a stored epoch of that size may have, the ones tried first first:
    a process whose XLA refuses the first settings stores with the next, and every new
    process starts from the first again."""
    return list(_SMALL_OPTIONS) if small else [None]


def _options(small: bool) -> dict[str, Any] | None:
    """The compile options an epoch of that size is compiled (and stored) with."""
    return _stored_options(small)[0]


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


def _signature(net: Any, optimizer: Any, loss: str, batch_size: int, n: int, n_val: int) -> str:
    opt = optimizer.get_config()
    opt.pop("name", None)
    if isinstance(opt.get("learning_rate"), (int, float)):
        # A constant rate is an optimizer variable (an argument of the compiled epoch); a
        # schedule is code, and stays in the signature.
        opt.pop("learning_rate")
    return json.dumps(
        [_strip_names(net), type(optimizer).__name__, opt, loss, batch_size, n, n_val],
        sort_keys=True,
        default=str,
    )


@dataclass(frozen=True)
class _Plain:
    """The layout of a plain perceptron: what its compiled epoch depends on.

    Per Dense layer: the indices of its kernel and bias (-1: none) in the model's trainable
    variables, its activation when that is not one of ``_SELECTED`` (else ``""``), and whether
    a dropout may precede it. ``selected`` and ``rates`` are the trial's values, arguments of the
    compiled epoch: an index into ``_SELECTED`` and a dropout rate per layer.
    """

    flatten: bool
    dense: tuple[tuple[int, int, str, bool], ...]
    selected: tuple[int, ...]
    rates: tuple[float, ...]


# Activations chosen at run time: both are computed and one selected. Only these two (the seed
# article's grid): selecting among linear/relu/tanh/sigmoid, or a ``lax.switch`` over all, made
# each new shape's compile slower than the compiles it saved (measured on breast-cancer-tpe's
# space, where almost every trial is a new shape anyway).
_SELECTED = ("linear", "relu")
# Other activations the own forward pass computes with Keras' functions, fixed per compile.
_FIXED = ("tanh", "sigmoid", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign",
          "relu6", "mish", "hard_sigmoid", "exponential")
_GOLDEN = 0x9E3779B9  # spreads the layers' dropout seeds apart
_EXTRAS = ("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint",
           "activity_regularizer", "quantization_config", "lora_rank")


def _plain(model: Any) -> _Plain | None:
    """``model``'s layout if it is a plain perceptron the own forward pass computes exactly."""
    if type(model).__name__ != "Sequential" or not model.layers:
        return None
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    flatten = False
    dense: list[tuple[int, int, str, bool]] = []
    selected: list[int] = []
    rates: list[float] = []
    rate: float | None = None  # the rate of a Dropout just seen
    for position, layer in enumerate(model.layers):
        kind = type(layer).__name__
        config = layer.get_config()
        if config.get("dtype", {}).get("config", {}).get("name", "float32") != "float32":
            return None
        if kind == "Flatten" and position == 0:
            flatten = True
        elif kind == "Dropout" and rate is None and config.get("noise_shape") is None:
            rate = float(config["rate"])
        elif kind == "Dense" and not any(config.get(key) for key in _EXTRAS):
            act = config.get("activation")
            if act not in _SELECTED + _FIXED or id(layer.kernel) not in index:
                return None  # a custom activation, or a frozen layer
            bias = index.get(id(layer.bias), -1) if layer.use_bias else -1
            if layer.use_bias and bias < 0:
                return None
            # A dropout slot before every layer but the first (whether this model's rate is
            # 0 or not), and before the first when the model has one there.
            slot = bool(dense) or rate is not None
            dense.append((index[id(layer.kernel)], bias, "" if act in _SELECTED else act, slot))
            selected.append(_SELECTED.index(act) if act in _SELECTED else 0)
            rates.append(rate or 0.0)
            rate = None
        else:
            return None
    if rate is not None or not dense or len(index) != sum(1 + (d[1] >= 0) for d in dense):
        return None  # a trailing Dropout, or variables the layout does not account for
    return _Plain(flatten, tuple(dense), tuple(selected), tuple(rates))


def _mix(x: Any) -> Any:
    """A 32-bit integer hash with full avalanche (``lowbias32``, from C. Wellons' hash
    prospector): every output bit depends on every input bit, in five cheap operations."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _plain_forward(layout: _Plain) -> Callable[..., Any]:
    """Logits of a plain perceptron: Keras' Dense and Dropout maths, knobs as arguments."""
    import jax
    import jax.numpy as jnp

    from studyhall.objectives._keras import keras

    get = keras().activations.get
    chosen = [get(name) for name in _SELECTED]

    def dropout(h: Any, rate: Any, key: Any) -> Any:  # keras.src.backend.jax.random.dropout
        keep = 1.0 - rate
        # Each unit's bit from a hash of (key, its index): threefry, Keras' generator, was
        # most of a 30-64-1 network's epoch (measured here: 6.4-8.3 ms an epoch with it,
        # 1.9-3.9 ms with this) and of its compile.
        stream = _mix(key[0] ^ _mix(key[1]))
        bits = _mix(jax.lax.iota(jnp.uint32, h.size).reshape(h.shape) ^ stream)
        uniform = (bits >> 8).astype(h.dtype) * (2.0 ** -24)  # in [0, 1), as 24-bit floats
        return jax.lax.select(uniform < keep, h / keep, jnp.zeros_like(h))

    def forward(trainable: Any, non_trainable: Any, x: Any, knobs: Any, key: Any,
                training: bool) -> Any:
        selected, rates = knobs
        h = x.reshape((x.shape[0], -1)) if layout.flatten else x
        for j, (kernel, bias, fixed, slot) in enumerate(layout.dense):
            if training and slot:  # rate 0 keeps every unit: the same maths as no dropout
                seed = jnp.array([(_GOLDEN * j) & 0xFFFFFFFF, 0], jnp.uint32)
                h = dropout(h, rates[j], key + seed)
            h = jnp.matmul(h, trainable[kernel])
            if bias >= 0:
                h = h + trainable[bias]
            if fixed:
                h = get(fixed)(h)
            else:
                out = chosen[0](h)
                for i, fn in enumerate(chosen[1:], 1):
                    out = jnp.where(selected[j] == i, fn(h), out)
                h = out
        return h, non_trainable

    return forward


def _keras_forward(model: Any) -> Callable[..., Any]:
    """Any other Keras model: its own ``stateless_call`` (dropout seeds in its state)."""

    def forward(trainable: Any, non_trainable: Any, x: Any, knobs: Any, key: Any,
                training: bool) -> Any:
        return model.stateless_call(trainable, non_trainable, x, training=training)

    return forward


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


def _compile(forward: Callable[..., Any], optimizer: Any, loss: str, batch_size: int, n: int,
             n_val: int, options: dict[str, Any] | None) -> Any:
    """One epoch as one jitted call, not yet compiled (``train`` lowers and compiles it ahead
    of time, so the cache holds the executable alone). ``forward(trainable, non_trainable, x,
    knobs, key, training) -> (logits, non_trainable)``; ``knobs`` are per-trial arguments of
    the forward pass, ``key`` a minibatch's dropout key: ``seeds`` (trial seed, first step) plus
    the step."""
    import jax
    import jax.numpy as jnp

    per_example, correct = _losses(loss)
    n_batches = math.ceil(n / batch_size)
    pad = n_batches * batch_size - n
    mask = (np.arange(n_batches * batch_size) < n).astype("float32").reshape(n_batches, batch_size)

    def epoch(trainable: Any, non_trainable: Any, opt_vars: Any, order: Any, x: Any, y: Any,
              x_val: Any, y_val: Any, knobs: Any, seeds: Any) -> Any:

        def batch_loss(trainable: Any, non_trainable: Any, x: Any, y: Any, w: Any,
                       key: Any) -> Any:
            logits, non_trainable = forward(trainable, non_trainable, x, knobs, key, True)
            total = jnp.sum(per_example(y, logits) * w)
            return total / jnp.maximum(jnp.sum(w), 1.0), (non_trainable, total)

        grad = jax.value_and_grad(batch_loss, has_aux=True)

        def step(carry: Any, batch: Any) -> Any:
            trainable, non_trainable, opt_vars = carry
            x, y, w, i = batch
            # Raw (seed, counter) keys, which the own forward pass hashes (``_mix``): deriving
            # keys with JAX's fold_in (threefry) cost a second of compiling per network shape.
            key = jnp.stack([seeds[0], seeds[1] + i.astype(jnp.uint32)])
            (_, (non_trainable, total)), grads = grad(trainable, non_trainable, x, y, w, key)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), total

        if pad:
            order = jnp.concatenate([order, order[:pad]])  # padded rows carry zero weight
        xb = x[order].reshape((n_batches, batch_size) + x.shape[1:])
        yb = y[order].reshape((n_batches, batch_size) + y.shape[1:])
        (trainable, non_trainable, opt_vars), totals = jax.lax.scan(
            step, (trainable, non_trainable, opt_vars),
            (xb, yb, jnp.asarray(mask), jnp.arange(n_batches)),
        )
        logits, _ = forward(trainable, non_trainable, x_val, knobs, seeds, False)
        val_loss = jnp.mean(per_example(y_val, logits))
        val_acc = jnp.mean(correct(y_val, logits))
        return trainable, non_trainable, opt_vars, jnp.sum(totals) / n, val_loss, val_acc

    return jax.jit(epoch, donate_argnums=(0, 1, 2), compiler_options=options)


def _compiled(key: str, args: Any, code: list[type], forward: Callable[..., Any],
              optimizer: Any, loss: str, batch_size: int, n: int, n_val: int, *,
              small: bool) -> Any:
    """The epoch compiled (and stored) with the options its size calls for."""
    from studyhall.objectives import _executables
    from studyhall.objectives._keras import jax_cache_dir

    def store(options: dict[str, Any] | None) -> Any:
        jitted = _compile(forward, optimizer, loss, batch_size, n, n_val, options)
        return _executables.compile_and_store(jax_cache_dir(), key, args, code, jitted,
                                              options)

    if not small:
        return store(_options(small))
    while True:
        try:
            return store(_options(small))
        except Exception as exc:  # jaxlib's XlaRuntimeError; only an unknown option is ours
            if len(_SMALL_OPTIONS) == 1 or "No such compile option" not in str(exc):
                raise
            del _SMALL_OPTIONS[0]


def _on_device(array: np.ndarray) -> Any:
    # Data sets are cached per process (lru_cache), so their ids are stable: transfer once.
    # ``device_put``, not ``jnp.asarray``: that staged each array through a compiled identity,
    # one XLA compile per shape (4 of a process's first trial's 7 eager compiles).
    import jax

    key = id(array)
    if key not in _DEVICE_DATA:
        _DEVICE_DATA[key] = (array, jax.device_put(array))
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
    from studyhall.objectives._host_init import drawing

    with drawing(None):  # its slots: zeros per weight shape, with no compile
        optimizer.build(model.trainable_variables)
    trainable = [v.value for v in model.trainable_variables]
    opt_vars = [v.value for v in optimizer.variables]
    layout = _plain(model)
    if layout is not None:
        net: Any = ["plain", layout.flatten, layout.dense, [v.shape for v in trainable],
                    x.shape[1:]]
        non_trainable: list[Any] = []  # only dropout seeds, which the own forward replaces
        knobs: Any = (np.array(layout.selected, np.int32), np.array(layout.rates, np.float32))
    else:
        net, knobs = model.get_config(), ()
        non_trainable = [v.value for v in model.non_trainable_variables]
    key = _signature(net, optimizer, loss, batch_size, len(x), len(x_val))
    dx, dy, dxv, dyv = (_on_device(a) for a in (x, y, x_val, y_val))
    cached = _CACHE.get(key)
    if cached is None:
        from studyhall.objectives import _executables
        from studyhall.objectives._keras import _release_freed_memory, jax_cache_dir

        args = (trainable, non_trainable, opt_vars, np.zeros(len(x), np.int32), dx, dy, dxv,
                dyv, knobs, np.zeros(2, np.uint32))
        # The classes whose code the epoch runs. The own forward pass runs no layer's: the
        # layers listed would make the file depend on whether the first model of a shape had
        # a Dropout (a rate of 0 builds none), and a worker whose first trial had one missed
        # the file of a process whose first trial had none (6 of 15 files in P3's runs).
        layers = [] if layout is not None else [type(layer) for layer in model.layers]
        code = layers + [type(optimizer), type(getattr(optimizer, "_learning_rate", None))]
        small = model.count_params() * (6 * len(x) + 2 * len(x_val)) < SMALL_BELOW
        fn = None
        for options in _stored_options(small):
            fn = _executables.load(jax_cache_dir(), key, args, code, options)
            if fn is not None:
                break
        if fn is None:
            forward = _plain_forward(layout) if layout is not None else _keras_forward(model)
            fn = _compiled(key, args, code, forward, optimizer, loss, batch_size, len(x),
                           len(x_val), small=small)
            # Keep the executable, not what JAX cached to make it (jaxprs, MLIR, the model
            # and optimizer its closures hold: ~10 MB more per shape), and hand the
            # compiler's freed heap back to the OS.
            jax.clear_caches()
            _release_freed_memory()
        _CACHE[key] = (fn, max(1, sum(1 for layer in model.layers if layer.weights)))
        while len(_CACHE) > 1 and sum(n for _, n in _CACHE.values()) > _CACHE_LAYERS:
            _CACHE.popitem(last=False)
            _executables.forget_prefetched()  # a study of more shapes than fit: they may be stale
    else:
        fn = cached[0]
        _CACHE.move_to_end(key)
    # The shuffle is drawn here, not in the compiled epoch: jax.random.permutation is a sort
    # network that took XLA longer to compile than the whole rest of the epoch. The dropout
    # keys of the own forward pass count (seed, step), apart from the shuffle's stream.
    rng = np.random.default_rng(seed)
    best: tuple[list[Any], list[Any]] | None = None
    try:
        for e in range(epochs):
            order = rng.permutation(len(x)).astype(np.int32)
            trainable, non_trainable, opt_vars, tl, vl, va = fn(
                trainable, non_trainable, opt_vars, order, dx, dy, dxv, dyv, knobs,
                np.array([seed & 0xFFFFFFFF, e * math.ceil(len(x) / batch_size)], np.uint32),
            )
            logs = EpochLogs(e, float(tl), float(vl), float(va))
            if on_epoch(logs):
                # A host copy: the device buffers are donated to (and freed by) the next epoch.
                best = ([np.array(a) for a in trainable], [np.array(a) for a in non_trainable])
    finally:
        if best is not None:
            trainable, non_trainable = best
        for var, value in zip(model.trainable_variables, trainable, strict=True):
            var.assign(value)
        # The own forward pass keeps no non-trainable state (its list is empty): Keras' dropout
        # seed variables keep their values.
        for var, value in zip(model.non_trainable_variables, non_trainable, strict=False):
            var.assign(value)
        # The optimizer's state too (step counter, momenta): a later call continues where this
        # one stopped, and ``optimizer.iterations``/``learning_rate`` tell where training got.
        for var, value in zip(optimizer.variables, opt_vars, strict=True):
            var.assign(value)
