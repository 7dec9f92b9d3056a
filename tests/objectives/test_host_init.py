from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from studyhall.objectives import _keras
from studyhall.objectives._host_init import drawing, values

k = _keras.keras()
ki = k.initializers


def _draw(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    out = values(ki.get(name), shape, "float32", np.random.default_rng(seed))
    assert out is not None and out.shape == shape and out.dtype == np.float32
    return out


@pytest.mark.parametrize("name", [n for n in _keras.INITIALIZERS if n not in ("zeros", "ones")]
                         + ["uniform", "normal"])
def test_each_random_initializer_draws_keras_own_distribution(name):
    from scipy.stats import ks_2samp

    shape = (300, 200)
    k.utils.set_random_seed(0)
    ours = _draw(name, shape).ravel()
    theirs = np.asarray(ki.get(name)(shape)).ravel()
    assert ours.std() == pytest.approx(float(theirs.std()), rel=0.02)
    assert ks_2samp(ours, theirs).statistic < 0.015  # a 3% error of scale shows as ~0.02
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.25  # the truncated are cut alike


def test_orthogonal_is_orthogonal_both_ways():
    tall, wide = _draw("orthogonal", (50, 20)), _draw("orthogonal", (3, 3, 2, 40))
    assert np.allclose(tall.T @ tall, np.eye(20), atol=1e-5)
    flat = wide.reshape(-1, 40)
    assert np.allclose(flat @ flat.T, np.eye(18), atol=1e-5)
    assert np.allclose(values(ki.Orthogonal(gain=2.0), (4, 4), "float32",
                              np.random.default_rng(0)) ** 2 @ np.ones(4), 4.0, atol=1e-5)


def test_constants_need_no_generator():
    assert (values(ki.Zeros(), (3,), "int64", None) == 0).all()
    assert values(ki.Zeros(), (3,), "int64", None).dtype == np.int64
    assert (values(ki.Ones(), (2, 2), "float32", None) == 1).all()
    assert (values(ki.Constant(0.25), (2,), "float32", None) == 0.25).all()
    assert values(ki.GlorotUniform(), (2, 2), "float32", None) is None


def test_a_seed_generator_starts_from_its_seed_as_keras_starts_it():
    k = _keras.keras()
    with drawing(None):
        ours = k.random.SeedGenerator(seed=1234).state
    theirs = k.random.SeedGenerator(seed=1234).state
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_array_equal(np.asarray(ours), [1234, 0])


def test_what_keras_must_draw_is_left_to_keras():
    class Doubled(ki.GlorotUniform):
        def __call__(self, shape, dtype=None):
            return 2 * super().__call__(shape, dtype)

    rng = np.random.default_rng(0)
    assert values(ki.GlorotUniform(seed=3), (2, 2), "float32", rng) is None  # its own seed
    assert values(Doubled(), (2, 2), "float32", rng) is None  # its own drawing
    assert values(ki.Identity(), (2, 2), "float32", rng) is None  # not one of ours
    assert values(ki.Orthogonal(), (4,), "float32", rng) is None  # Keras' own error
    with drawing(rng):
        assert np.asarray(k.Variable(initializer=ki.Identity(), shape=(2, 2))).trace() == 2
        seeded = [np.asarray(k.Variable(initializer=ki.GlorotUniform(seed=3), shape=(4, 4)))
                  for _ in range(2)]
    assert (seeded[0] == seeded[1]).all()


def test_a_session_seed_gives_the_same_model_and_the_config_keeps_keras_initializers():
    def build() -> object:
        _keras.new_session(11)
        return _keras.build_mlp(30, units=7, layers=2, activation="relu", dropout=0.2,
                                kernel_initializer="he_normal")

    first, second = build(), build()
    pairs = zip(first.get_weights(), second.get_weights(), strict=True)
    assert all((a == b).all() for a, b in pairs)
    _keras.new_session(12)
    other = _keras.build_mlp(30, units=7, layers=2, activation="relu", dropout=0.2,
                             kernel_initializer="he_normal")
    assert not (other.get_weights()[0] == first.get_weights()[0]).all()
    dense = [layer for layer in first.get_config()["layers"] if layer["class_name"] == "Dense"]
    assert dense[0]["config"]["kernel_initializer"]["class_name"] == "HeNormal"
    assert dense[0]["config"]["bias_initializer"]["class_name"] == "Zeros"


def test_outside_a_drawing_block_keras_draws_as_before():
    k.utils.set_random_seed(5)
    a = np.asarray(k.Variable(initializer=ki.GlorotUniform(), shape=(3, 3)))
    k.utils.set_random_seed(5)
    b = np.asarray(k.Variable(initializer=ki.GlorotUniform(), shape=(3, 3)))
    assert (a == b).all()  # Keras' own seeding, untouched


def test_a_new_weight_shape_compiles_nothing(caplog):
    import jax

    def build(units: int, layers: int) -> None:
        model = _keras.build_mlp(30, units=units, layers=layers, activation="relu", dropout=0.3)
        with drawing(None):
            _keras.make_optimizer("adam", 0.01).build(model.trainable_variables)

    _keras.new_session(1)
    build(3, 1)  # a first model and optimizer: Keras' own first-use compiles
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            jax.clear_caches()  # as _loop does after compiling an epoch
            _keras.new_session(2)
            build(41, 3)
    finally:
        jax.config.update("jax_log_compiles", False)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []


_FIRST_OPTIMIZER = """
import json, logging
from studyhall.objectives import _keras
_keras.keras()
import jax
compiles = []
class Seen(logging.Handler):
    def emit(self, record):
        if "Compiling" in record.getMessage():
            compiles.append(record.getMessage()[:80])
logging.getLogger("jax").addHandler(Seen())
jax.config.update("jax_log_compiles", True)
opt = _keras.make_optimizer("sgd", 0.25, momentum=0.5)
it, lr = opt.iterations, opt.learning_rate
print(json.dumps({"compiles": compiles, "iterations": [int(it.value), str(it.dtype)],
                  "lr": [float(lr), str(lr.dtype)]}))
"""


def test_a_process_first_optimizer_compiles_nothing():
    # A fresh process: JAX compiles each scalar conversion once per process and dtype.
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", _FIRST_OPTIMIZER], capture_output=True,
                         text=True, env=env, timeout=300, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"compiles": [], "iterations": [0, "int32"], "lr": [0.25, "float32"]}


@pytest.mark.slow
def test_tensorflow_builds_the_same_initial_weights():
    code = (
        "import json; from studyhall.objectives import _keras; _keras.new_session(3); "
        "m = _keras.build_mlp(30, units=9, layers=2, activation='relu', dropout=0.1); "
        "print('W', json.dumps([w.tolist() for w in m.get_weights()]))"
    )
    env = {**os.environ, "STUDYHALL_BACKEND": "tensorflow", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    line = [x for x in result.stdout.splitlines() if x.startswith("W ")]
    assert line, result.stdout + result.stderr[-2000:]
    _keras.new_session(3)
    here = _keras.build_mlp(30, units=9, layers=2, activation="relu", dropout=0.1)
    theirs = [np.asarray(w, np.float32) for w in json.loads(line[0][2:])]
    assert all(np.array_equal(a, b) for a, b in zip(here.get_weights(), theirs, strict=True))
