"""Initial weights drawn with NumPy instead of by compiled backend operations.

On the JAX backend every initializer call is an eager operation that JAX compiles once per
weight shape and process: a ``glorot_uniform`` kernel 55-60 ms (lowering the threefry generator
alone is 35-40 ms), each shape's zero bias or optimizer slot 50 ms. A search over architectures
meets new shapes all the time: 40 ``breast-cancer-tpe`` trials spent 6 of their 18-19 s building
models with JAX's caches warm, 38 of 102 s cold (measured here), and every worker pays again
for every shape. Drawn with NumPy, the same distributions cost microseconds.

A number given as a variable's value (an optimizer's iteration count, its learning rate) is made a
NumPy scalar of the variable's dtype first, inside the same blocks: JAX otherwise compiles a
conversion per dtype and process, 20-60 ms each (measured here), two of a worker's first trial.

Only Keras' own initializers are drawn here (variance scaling: Glorot, He, LeCun; uniform,
normal, truncated normal, orthogonal, zeros, ones, constant; a seed generator's first state),
and only when built without a seed of their own; any other initializer, or one whose class
overrides the drawing, is left to Keras. The layers keep their Keras initializers, so configs
and saved models are unchanged. The values follow the same distributions, not the same random
streams: the session's generator (``_keras.new_session``) makes them reproducible from the
trial's seed, on every backend alike.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["drawing", "values"]

_state = threading.local()  # whether this thread is in a ``drawing`` block, and its generator
_installed = False
_install_lock = threading.Lock()


@contextmanager
def drawing(rng: np.random.Generator | None) -> Iterator[None]:
    """Variables created in this block (in this thread) get NumPy-drawn initial values.

    ``rng`` draws the random initializers; None leaves those to Keras (constants only: what
    an optimizer's slots need, where no seed is at hand).
    """
    _install()
    previous = getattr(_state, "active", False), getattr(_state, "rng", None)
    _state.active, _state.rng = True, rng
    try:
        yield
    finally:
        _state.active, _state.rng = previous


def _install() -> None:
    """Route the backend Variable's initialisation through ``values`` (and its conversion of a
    number through NumPy) inside ``drawing``, once per process (one backend per process; a
    Keras without these hooks keeps its own)."""
    global _installed
    if _installed:
        return
    from studyhall.objectives._keras import keras

    cls = keras().Variable
    with _install_lock:
        if _installed:
            return
        _installed = True
        if not hasattr(cls, "_initialize_with_initializer"):
            return
        original = cls._initialize_with_initializer

        def _initialize_with_initializer(self: Any, initializer: Any) -> None:
            if getattr(_state, "active", False) and getattr(self, "_layout", None) is None:
                value = values(initializer, tuple(self._shape), self._dtype, _state.rng)
                if value is not None:
                    # With its dtype: JAX stages a dtype-less NumPy array through a
                    # compiled identity, one more compile per shape.
                    self._initialize(self._convert_to_tensor(value, dtype=self._dtype))
                    return
            original(self, initializer)

        cls._initialize_with_initializer = _initialize_with_initializer
        convert = cls._convert_to_tensor
        standardize = keras().backend.standardize_dtype

        def _convert_to_tensor(self: Any, value: Any, dtype: Any = None) -> Any:
            if (getattr(_state, "active", False) and dtype is not None
                    and type(value) in (bool, int, float)):
                # A dtype NumPy lacks, or a value it refuses: Keras' own conversion.
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    value = np.asarray(value, dtype=np.dtype(standardize(dtype)))
            return convert(self, value, dtype=dtype)

        cls._convert_to_tensor = _convert_to_tensor


def values(initializer: Any, shape: tuple[int, ...], dtype: Any,
           rng: np.random.Generator | None) -> np.ndarray | None:
    """``initializer``'s values for ``shape`` drawn with NumPy, or None where Keras must draw
    them (an initializer not known here, a seed of its own, a dtype NumPy lacks, no ``rng``)."""
    from keras import initializers as ki

    try:
        dtype = np.dtype(dtype or "float32")
    except TypeError:
        return None
    kind = _kind(initializer, ki)
    if kind is None:
        return _seed_state(initializer, dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "ones":
        return np.ones(shape, dtype)
    if kind == "constant":
        return np.full(shape, initializer.value, dtype)
    if rng is None or getattr(initializer, "_init_seed", None) is not None:
        return None
    if kind == "uniform":
        drawn = rng.uniform(initializer.minval, initializer.maxval, shape)
    elif kind == "normal":
        drawn = rng.normal(initializer.mean, initializer.stddev, shape)
    elif kind == "truncated":
        drawn = _truncated(rng, shape) * initializer.stddev + initializer.mean
    elif kind == "scaling":
        drawn = _scaled(initializer, shape, rng)
    else:  # orthogonal
        if len(shape) < 2:
            return None  # Keras' own error
        drawn = initializer.gain * _orthogonal(shape, rng)
    return np.asarray(drawn, dtype)


def _seed_state(initializer: Any, dtype: np.dtype) -> np.ndarray | None:
    """A Keras ``SeedGenerator``'s first state, ``[seed, 0]``, or None for anything else.

    Its initializer is a closure over the seed that converts the list on the backend: one
    compile per process, and again after every ``jax.clear_caches`` (``_loop`` clears them
    after compiling a new shape), in every model with a Dropout layer.
    """
    code = getattr(initializer, "__code__", None)
    if (code is None or getattr(initializer, "__qualname__", "")
            != "SeedGenerator.__init__.<locals>.seed_initializer"):
        return None
    cells = dict(zip(code.co_freevars, initializer.__closure__ or (), strict=True))
    seed = cells["seed"].cell_contents if "seed" in cells else None
    if type(seed) is not int:
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):  # Keras' own error, then
        return np.asarray([seed, 0], dtype)
    return None


def _kind(initializer: Any, ki: Any) -> str | None:
    """Which of Keras' initializers ``initializer`` is, by the class whose drawing it uses."""
    call = type(initializer).__call__
    for cls, kind in ((ki.VarianceScaling, "scaling"), (ki.RandomUniform, "uniform"),
                      (ki.RandomNormal, "normal"), (ki.TruncatedNormal, "truncated"),
                      (ki.Orthogonal, "orthogonal"), (ki.Zeros, "zeros"), (ki.Ones, "ones"),
                      (ki.Constant, "constant")):
        if isinstance(initializer, cls) and call is cls.__call__:
            return kind
    return None


def _truncated(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal values cut at two standard deviations (Keras' truncated normal)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out


def _scaled(initializer: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``VarianceScaling.__call__``'s arithmetic, the drawing in NumPy."""
    from keras.src.initializers.random_initializers import compute_fans

    fan_in, fan_out = compute_fans(shape, input_axes=initializer.input_axes,
                                   output_axes=initializer.output_axes)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(initializer.mode, (fan_in + fan_out) / 2.0)
    scale = initializer.scale / max(1.0, fan)
    if initializer.distribution == "truncated_normal":
        return _truncated(rng, shape) * (math.sqrt(scale) / 0.87962566103423978)
    if initializer.distribution == "untruncated_normal":
        return rng.normal(0.0, math.sqrt(scale), shape)
    limit = math.sqrt(3.0 * scale)
    return rng.uniform(-limit, limit, shape)


def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``Orthogonal.__call__``'s arithmetic (gain aside), in NumPy."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)
