"""The one place Keras is imported: backend choice, model building and the reporting fit.

Importing this module is cheap; ``keras()`` does the heavy import on first use, so commands that
never train (``list``, ``show``, ``--help``) never load TensorFlow or JAX.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import math
import os
import random
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FitResult", "build_mlp", "keras", "make_optimizer", "new_session", "train_reporting"]

_logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "nadam")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish")
INITIALIZERS = (
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
    "lecun_normal", "random_uniform", "random_normal", "truncated_normal", "orthogonal", "zeros",
    "ones",
)


def default_backend() -> str:
    """JAX when installed (it ran our fit 2.7x faster than TensorFlow), else TensorFlow."""
    return "jax" if importlib.util.find_spec("jax") else "tensorflow"


def keras() -> Any:
    """Import Keras with the chosen backend (``STUDYHALL_BACKEND`` or ``KERAS_BACKEND``)."""
    global _configured
    if "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = os.environ.get("STUDYHALL_BACKEND") or default_backend()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _configured:
        import keras as _keras

        return _keras
    with _deferred(_DEFERRED), _collector_paused():
        jax_backend = os.environ["KERAS_BACKEND"] == "jax"
        if jax_backend:
            _persistent_compile_cache()
        if jax_backend and not _fit_asked():  # the compiled loop
            from studyhall.objectives import _executables

            _inline_dispatch()
            _executables.prefetch(_cache_dir)  # beside the rest of this import
        import keras as _keras

        _configured = True
        _cached_skipsets()
        if jax_backend:
            _no_tensorflow_for_serialization()
    return _keras


_configured = False

_DEFERRED = ("matplotlib", "jax.experimental.pallas", "jax.experimental.sparse.linalg",
             "pandas", "requests", "rich", "h5py",
             *(f"keras.{name}" for name in ("_tf_keras", "applications", "datasets",
                                            "distillation", "export", "legacy", "preprocessing",
                                            "quantizers", "visualization", "wrappers")))
"""Packages Keras imports at its own import and uses only inside functions that plot, run TPU
attention kernels, post to a monitor, save to HDF5, print a summary, solve sparse systems
(SciPy) or fit on a DataFrame. Measured here with the data and Optuna already loaded, as in a
worker: ``keras()`` 0.99 s with only ``matplotlib.pyplot`` loaded lazily (its package still
loaded), 0.71 s with these deferred (3 runs each), where a whole warm P3 search takes under 2 s.
Then the public namespaces of Keras that no trial uses (the ``tf.keras`` copy of the whole API,
the pretrained applications, the dataset downloaders...; ``keras.src``, which they re-export,
loads as before): Keras' import 192 -> 150 ms (``-X importtime``). Then pandas (0.21 s after
Optuna and JAX), JAX's sparse solvers, which import SciPy's sparse and dense linear algebra
(0.12-0.15 s), and rich (~0.02 s): ``keras()`` 1.04-1.22 s -> 0.59-0.74 s (6 alternated runs).
Not psutil: every ``.keras`` save reads the free memory with it."""

_DEFERRED_CLASSES = {"pandas": ("Series", "DataFrame")}
"""Classes of a deferred module that Keras reads at its import, to test values against later
(``ARRAY_TYPES`` in its array slicing): the stand-in holds a ``_DeferredClass`` for each."""


class _Deferred(types.ModuleType):
    """A stand-in for a module of ``_DEFERRED`` that imports the real one at its first use.

    While Keras imports, it is an empty package: ``from pkg import sub`` then imports ``sub``
    (another stand-in) instead of reading an attribute. Afterwards an attribute is read from
    the real module, imported then.
    """

    def __getattr__(self, name: str) -> Any:
        if _deferring:
            raise AttributeError(name)
        return getattr(importlib.import_module(self.__name__), name)


class _DeferredClass(type):
    """A class of a deferred module, bound while Keras imports, that ``isinstance`` and
    ``issubclass`` test against: until the module is imported for real nothing can be one of
    its instances, so the answer is False without importing it; afterwards the real class's."""

    def _real(cls) -> type | None:
        module = sys.modules.get(cls.__module__)
        if module is None or isinstance(module, _Deferred):
            return None
        return getattr(module, cls.__name__)

    def __instancecheck__(cls, instance: Any) -> bool:
        real = cls._real()
        return real is not None and isinstance(instance, real)

    def __subclasscheck__(cls, subclass: type) -> bool:
        real = cls._real()
        return real is not None and issubclass(subclass, real)


class _DeferredLoader(importlib.abc.Loader):
    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Deferred(spec.name)
        module.__path__ = []
        for name in _DEFERRED_CLASSES.get(spec.name, ()):
            setattr(module, name, _DeferredClass(name, (), {"__module__": spec.name}))
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _DeferringFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not any(name == n or name.startswith(n + ".") for n in self._names):
            return None
        return importlib.machinery.ModuleSpec(name, _DeferredLoader(), is_package=True)


_deferring = False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: importing Keras and JAX makes tens of thousands of
    long-lived objects, and the collections they trigger walk them all to free next to
    nothing (0.27 s of 1.3-1.4 s here, A/B; the worker freezes them afterwards)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def _deferred(names: Sequence[str]) -> Iterator[None]:
    """Inside, importing one of ``names`` (or a submodule), not imported yet, binds a stand-in
    (``_Deferred``); on the way out the stand-ins leave ``sys.modules``, so a later import is
    a plain one, and a stand-in bound inside reads from the module that import makes."""
    global _deferring
    finder = _DeferringFinder([  # one not installed stays missing: Keras then binds None
        n for n in names
        if n not in sys.modules and importlib.util.find_spec(n.partition(".")[0]) is not None])
    sys.meta_path.insert(0, finder)
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        sys.meta_path.remove(finder)
        for name in [n for n, m in sys.modules.items() if isinstance(m, _Deferred)]:
            del sys.modules[name]


def _inline_dispatch() -> None:
    """Run each compiled call on the calling thread, not handed to XLA's CPU threads.

    The compiled loop waits for every epoch's result anyway, so asynchronous dispatch only
    added a thread hand-off per call, and XLA split even these tiny matrix products over its
    thread pool: 30 epochs of a 30-64-1 network at batch 32 took 99-107 ms inline against
    126-162 ms dispatched, on 160-170 ms of CPU against 200-250 (one process on 2 cores).
    Set before JAX creates its CPU client; ``model.fit`` (``STUDYHALL_TRAINING_LOOP=fit``)
    keeps JAX's default, since it queues steps ahead.
    """
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)


def _persistent_compile_cache() -> None:
    """Keep compiled epochs on disk, shared by every worker process and every later run.

    Measured here: a new network shape's first epoch took 0.6 s to compile and 0.17 s when
    found in this cache. ``STUDYHALL_JAX_CACHE=off`` disables it. The compiled loop also keeps
    its epochs there by network signature (``_executables``), found without tracing.
    """
    global _cache_dir
    where = os.environ.get("STUDYHALL_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "studyhall", "jax"
    )
    if where.lower() == "off":
        return
    import jax

    try:
        os.makedirs(where, exist_ok=True)
    except OSError as exc:
        _logger.warning("no persistent JAX compile cache (%s): %s", where, exc)
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_dir = where


_cache_dir: str | None = None


def jax_cache_dir() -> str | None:
    """The persistent compile cache's directory (None: off, or not on the JAX backend)."""
    return _cache_dir


class _TensorflowIfImported:
    """Keras' lazy ``tensorflow`` module, "available" only once someone has imported it.

    Keras' (de)serialization asks ``tf.available`` before testing whether a value is a
    ``tf.TensorShape``/``DType``/``TypeSpec``, and asking imports TensorFlow: 5.5 s of a worker's
    first ``get_config``/``save`` on the JAX backend (measured). No value can be a TensorFlow
    object before TensorFlow is imported, so until then the answer is no, without the import.
    """

    def __init__(self, lazy: Any) -> None:
        self._lazy = lazy

    @property
    def available(self) -> bool:
        return "tensorflow" in sys.modules and bool(self._lazy.available)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lazy, name)


def _cached_skipsets() -> None:
    """Compute each kind of object's saving skip-set once per process, as Keras means to.

    A ``.keras`` save walks every layer's and optimizer's attributes, skipping those a fresh
    reference ``Layer()`` or ``Optimizer(1.0)`` has. Keras caches that set under the key
    ``saving_attr_skipset_*`` but looks it up under ``saving_attr_skiplist_*`` (3.15), so every
    save built new reference objects: a third of a small model's save (11 ms here), and each
    trial's ``clear_session`` would have emptied its cache anyway. The set depends on the kind
    only and is only read.
    """
    try:
        from keras.src.saving import saving_lib
    except ImportError:  # a Keras that moved its internals: keep its behaviour
        return
    skipset = getattr(saving_lib, "get_attr_skipset", None)
    if skipset is not None and not hasattr(skipset, "cache_info"):
        saving_lib.get_attr_skipset = functools.cache(skipset)


def _no_tensorflow_for_serialization() -> None:
    try:
        from keras.src.legacy.saving import json_utils
        from keras.src.saving import serialization_lib
    except ImportError:  # a Keras that moved its internals: keep its behaviour
        return
    for module in (serialization_lib, json_utils):
        lazy = getattr(module, "tf", None)
        if lazy is not None and not isinstance(lazy, _TensorflowIfImported):
            module.tf = _TensorflowIfImported(lazy)


JAX_CACHE_TRIALS = 20
"""Clear JAX's compilation caches every this many trials (bounds memory, keeps most reuse)."""
_sessions = 0


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    XLA's compiler frees what it allocates per compilation, but glibc keeps the pages: over
    200 breast-cancer trials one worker grew by 461 MB without this and stayed flat with it
    (measured here, trimming every 10 trials). Called after each compile of the training loop
    and every ``JAX_CACHE_TRIALS`` trials.
    """
    global _libc
    if _libc is None:
        import ctypes

        try:  # by soname: ctypes.util.find_library would start a subprocess every time
            _libc = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc(0)


_libc: Any = None  # glibc's malloc_trim, once looked up; False where there is none


def _fit_loop() -> bool:
    """Train with ``model.fit``: on backends other than JAX, or when asked to (benchmarks)."""
    return keras().backend.backend() != "jax" or _fit_asked()


def _fit_asked() -> bool:
    return os.environ.get("STUDYHALL_TRAINING_LOOP") == "fit"


def new_session(seed: int) -> None:
    """Free the previous trial's graphs and models, then seed Python, NumPy, the backend and
    the generator of the session's initial weights (``drawn_weights``)."""
    k = keras()
    # free_memory=False: its gc.collect() cost 0.13-0.3 s a trial, more than a whole 20-epoch
    # training in the compiled loop; the models of a finished trial are freed by refcounting.
    k.backend.clear_session(free_memory=False)
    global _sessions, _draws
    _sessions += 1
    _draws = np.random.default_rng(seed)
    if _sessions % JAX_CACHE_TRIALS == 0:
        gc.collect()  # Keras models hold reference cycles; collect them now and then
        _release_freed_memory()
    if k.backend.backend() == "jax" and _sessions % JAX_CACHE_TRIALS == 0 and _fit_loop():
        import jax

        # fit() makes new jitted functions for every model and JAX keeps each executable in
        # global caches: +155 MB over 40 trials here. Clearing them every trial kept memory
        # flat but made 1-epoch trials ~2x slower (everything recompiles), so clear now and then.
        jax.clear_caches()
    if k.backend.backend() == "tensorflow":
        k.utils.set_random_seed(seed)
        return
    # keras.utils.set_random_seed also imports TensorFlow whenever it is installed (2.5 s per
    # process); on other backends do what it does without that import.
    random.seed(seed)
    np.random.seed(seed)
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    except ImportError:  # a Keras that moved its internals: pay for the import
        k.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)


_draws: np.random.Generator | None = None  # this session's initial weights (``drawn_weights``)


def drawn_weights() -> AbstractContextManager[None]:
    """A block whose new variables get initial values drawn with NumPy from the session's
    seed (``_host_init``): no backend compile per weight shape."""
    from studyhall.objectives._host_init import drawing

    return drawing(_draws)


def build_mlp(
    n_features: int,
    *,
    units: int,
    layers: int,
    activation: str,
    dropout: float,
    kernel_initializer: str = "glorot_uniform",
    outputs: int = 1,
    output_activation: str | None = "sigmoid",
) -> Any:
    """A plain multi-layer perceptron: ``layers`` x (Dense + Dropout), then the output layer."""
    k = keras()
    with drawn_weights():
        model = k.Sequential([k.Input((n_features,))])
        for _ in range(layers):
            model.add(k.layers.Dense(units, activation=activation,
                                     kernel_initializer=kernel_initializer))
            if dropout > 0:
                model.add(k.layers.Dropout(dropout))
        model.add(k.layers.Dense(outputs, activation=output_activation))
    return model


def make_optimizer(name: str, learning_rate: Any, momentum: float = 0.0,
                   nesterov: bool = False) -> Any:
    """A Keras optimizer by name; momentum/Nesterov apply to SGD (momentum also to RMSprop)."""
    from studyhall.objectives._host_init import drawing

    o = keras().optimizers
    with drawing(None):  # its iteration count and learning rate: no compile (``_host_init``)
        if name == "sgd":
            return o.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
        if name == "rmsprop":
            return o.RMSprop(learning_rate=learning_rate, momentum=momentum)
        cls = {"adam": o.Adam, "adagrad": o.Adagrad, "nadam": o.Nadam}[name]
        return cls(learning_rate=learning_rate)


@dataclass(frozen=True)
class FitResult:
    """What a reporting fit returns: the best monitored value and its epoch, and the history.

    ``stopped_epoch`` is the last epoch trained when early stopping ended the fit, else ``None``.
    """

    value: float
    best_epoch: int
    history: dict[str, list[float]]
    stopped_epoch: int | None = None


def _stop(trial: Any, reason: str) -> Exception:
    import optuna

    trial.set_user_attr("pruned_reason", reason)
    return optuna.TrialPruned(reason)


class _EarlyStop(Exception):
    """Raised by the reporter to end a fit that stopped improving; not an error."""

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.epoch = epoch


class _Reporter:
    """Per-epoch bookkeeping shared by both training paths: history, NaN guard, pruning, and
    early stopping (after ``patience`` epochs without a better ``monitor``; 0: never)."""

    def __init__(self, trial: Any, monitor: str, maximize: bool = True, patience: int = 0) -> None:
        self.trial = trial
        self.monitor = monitor
        self.maximize = maximize
        self.patience = patience
        self.best: float | None = None
        self.since_best = 0
        self.history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_accuracy": []}

    def __call__(self, epoch: int, logs: Any) -> bool:
        """Record one epoch; return whether it is the best so far (its weights are kept)."""
        for key, values in self.history.items():
            values.append(float(logs[key]))
        loss = self.history["loss"][-1]
        if not math.isfinite(loss):
            raise _stop(self.trial, f"NaN guard: training loss is {loss} at epoch {epoch}")
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            raise _stop(self.trial, f"NaN guard: {self.monitor} is {value} at epoch {epoch}")
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise _stop(self.trial, f"pruned at epoch {epoch} ({self.monitor}={value:.4g})")
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best, self.since_best = value, 0
            return True
        self.since_best += 1
        if self.patience and self.since_best >= self.patience:
            raise _EarlyStop(epoch)
        return False


def _keras_loss_and_metric(loss: str) -> tuple[Any, Any]:
    k = keras()
    if loss == "binary_logits":
        return (k.losses.BinaryCrossentropy(from_logits=True),
                k.metrics.BinaryAccuracy(name="accuracy", threshold=0.0))
    accuracy = k.metrics.SparseCategoricalAccuracy(name="accuracy")
    if loss == "sparse_categorical_logits":
        return k.losses.SparseCategoricalCrossentropy(from_logits=True), accuracy
    ops = k.ops

    def one_hot(y: Any, z: Any) -> Any:
        return ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), ops.shape(z)[-1])

    def mse(y: Any, z: Any) -> Any:  # on the softmax: the network outputs logits
        return ops.mean(ops.square(ops.softmax(z, axis=-1) - one_hot(y, z)), axis=-1)

    def hinge(y: Any, z: Any) -> Any:
        return k.losses.categorical_hinge(one_hot(y, z), z)

    return {"sparse_categorical_mse": mse, "sparse_categorical_hinge": hinge}[loss], accuracy


def _fit(model: Any, optimizer: Any, data: Any, loss: str, epochs: int, batch_size: int,
         reporter: _Reporter) -> None:
    k = keras()
    keras_loss, metric = _keras_loss_and_metric(loss)
    model.compile(optimizer=optimizer, loss=keras_loss, metrics=[metric])

    best: list[Any] = []

    class EpochEnd(k.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if reporter(epoch, logs or {}):
                best[:] = [model.get_weights()]

    x, y, x_val, y_val = data
    try:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val),
                  verbose=0, callbacks=[EpochEnd()], shuffle=True)
    finally:
        if best:  # end with the best epoch's weights, as the compiled loop does
            model.set_weights(best[0])


def train_reporting(
    trial: Any,
    model: Any,
    optimizer: Any,
    data: Sequence[Any],
    *,
    loss: str,
    epochs: int,
    batch_size: int,
    monitor: str,
    maximize: bool,
    seed: int,
    patience: int = 0,
) -> FitResult:
    """Train with per-epoch reporting to ``trial``; return the best monitored epoch.

    On JAX the compiled loop of ``_loop`` trains (same model, same maths, ~no overhead); on
    other backends ``model.fit`` does. ``loss`` is one of ``_loop.LOSSES``: the network
    outputs logits. ``patience`` > 0 stops the fit
    (without error) once ``monitor`` has not improved for that many epochs. The model ends
    with its best epoch's weights, and is saved as the trial's artifact when the study's
    ``save_models`` option asks for it (see ``_artifacts``).

    Raises:
        optuna.TrialPruned: the pruner said so, or the loss went NaN/inf (the reason is stored
            in the trial's ``pruned_reason`` user attribute).
    """
    reporter = _Reporter(trial, monitor, maximize, patience)
    x, y, x_val, y_val = data
    stopped: int | None = None
    try:
        if not _fit_loop():
            from studyhall.objectives import _loop

            _loop.train(model, optimizer, (x, y, x_val, y_val), loss=loss, epochs=epochs,
                        batch_size=batch_size, seed=seed,
                        on_epoch=lambda logs: reporter(logs.epoch, logs))
        else:
            _fit(model, optimizer, (x, y, x_val, y_val), loss, epochs, batch_size, reporter)
    except _EarlyStop as early:
        stopped = early.epoch
    values = reporter.history[monitor]
    pick = max if maximize else min
    best = pick(range(len(values)), key=values.__getitem__)
    from studyhall.objectives import _artifacts

    _artifacts.save_trial_model(trial, model, values[best], maximize)
    return FitResult(value=values[best], best_epoch=best, history=reporter.history,
                     stopped_epoch=stopped)
