"""Learning-rate schedules: the rate the optimizer actually applies follows the formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studyhall.errors import SpecError
from studyhall.objectives import _keras, _loop
from studyhall.objectives.schedules import SCHEDULES, make_schedule

LR0, K, PERIOD, EPOCHS = 0.2, 0.3, 3.0, 7

FORMULAS = {
    "constant": lambda t: LR0,
    "time_decay": lambda t: LR0 / (1 + K * t),
    "exp_decay": lambda t: LR0 * math.exp(-K * t),
    "cosine_restarts": lambda t: LR0 * 0.5 * (1 + math.cos(math.pi * (t % PERIOD) / PERIOD)),
}


def _data(n: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(np.float32)
    return x, y, x[:8], y[:8]


def _linear_model() -> object:
    k = _keras.keras()
    _keras.new_session(0)
    return k.Sequential([k.Input((2,)), k.layers.Dense(1, kernel_initializer="ones")])


def _gradient(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean binary cross-entropy on logits)/d(w, b), in float64."""
    z = x.astype(np.float64) @ w.astype(np.float64)[:, 0] + float(b[0])
    residual = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
    return np.concatenate([x.T.astype(np.float64) @ residual, [residual.sum()]])


def _schedule(name: str, steps_per_epoch: int) -> object:
    return make_schedule(name, LR0, steps_per_epoch=steps_per_epoch, decay=K, restart_epochs=PERIOD)


def test_every_schedule_is_tested():
    assert set(FORMULAS) == set(SCHEDULES)


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_step_sgd_takes_each_epoch_follows_the_formula(name):
    """One minibatch per epoch: each epoch's update is -lr(t) * gradient, so the rate the
    compiled loop applied is (weights after - weights before) / -gradient."""
    x, y, xv, yv = data = _data()
    model = _linear_model()
    optimizer = _keras.make_optimizer("sgd", _schedule(name, steps_per_epoch=1))
    applied = []
    for _ in range(EPOCHS):
        w, b = (v.numpy().copy() for v in model.trainable_variables)
        grad = _gradient(w, b, x, y)
        _loop.train(model, optimizer, data, loss="binary_logits", epochs=1, batch_size=len(x),
                    seed=0, on_epoch=lambda logs: None)
        w2, b2 = (v.numpy() for v in model.trainable_variables)
        step = np.concatenate([w2[:, 0] - w[:, 0], b2 - b]).astype(np.float64)
        applied.append(float(np.dot(step, -grad) / np.dot(grad, grad)))
    expected = [FORMULAS[name](t) for t in range(EPOCHS)]
    np.testing.assert_allclose(applied, expected, rtol=2e-3)
    if name != "constant":
        assert len({round(a, 6) for a in applied}) > 2  # it really moved


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_optimizer_rate_follows_the_formula_epoch_by_epoch(name):
    """Four minibatches per epoch: after each epoch of training the optimizer has taken 4
    more steps and its learning rate is the formula at the next whole epoch."""
    x, y, xv, yv = data = _data(32)
    model = _linear_model()
    optimizer = _keras.make_optimizer("sgd", _schedule(name, steps_per_epoch=4), momentum=0.9,
                                      nesterov=True)
    seen = []
    for epoch in range(EPOCHS):
        _loop.train(model, optimizer, data, loss="binary_logits", epochs=1, batch_size=8,
                    seed=epoch, on_epoch=lambda logs: None)
        assert int(optimizer.iterations.numpy()) == 4 * (epoch + 1)
        seen.append(float(np.asarray(optimizer.learning_rate)))
    np.testing.assert_allclose(seen, [FORMULAS[name](t + 1) for t in range(EPOCHS)], rtol=1e-5)


def test_within_an_epoch_the_rate_moves_smoothly():
    lr = _schedule("exp_decay", steps_per_epoch=10)
    values = [float(np.asarray(lr(step))) for step in range(0, 21)]
    np.testing.assert_allclose(values, [LR0 * math.exp(-K * s / 10) for s in range(21)], rtol=1e-5)


def test_cosine_restarts_jump_back_to_lr0_every_period():
    lr = _schedule("cosine_restarts", steps_per_epoch=5)
    period_steps = int(PERIOD * 5)
    assert float(np.asarray(lr(period_steps - 1))) < 0.02 * LR0  # the bottom of the cosine
    assert float(np.asarray(lr(period_steps))) == pytest.approx(LR0)
    assert float(np.asarray(lr(2 * period_steps))) == pytest.approx(LR0)


def test_schedules_survive_keras_serialisation():
    k = _keras.keras()
    for name in SCHEDULES[1:]:
        lr = _schedule(name, steps_per_epoch=7)
        again = k.optimizers.schedules.deserialize(k.optimizers.schedules.serialize(lr))
        assert type(again) is type(lr) and again.get_config() == lr.get_config()


def test_a_bad_schedule_is_refused_with_the_allowed_names():
    with pytest.raises(SpecError, match="`schedule` must be one of constant, time_decay, "
                                        "exp_decay, cosine_restarts; got 'linear'"):
        make_schedule("linear", 0.1, steps_per_epoch=1)
    with pytest.raises(SpecError, match="restart_epochs must be > 0"):
        make_schedule("cosine_restarts", 0.1, steps_per_epoch=1, restart_epochs=0)
    assert make_schedule("constant", 0.1, steps_per_epoch=1) == 0.1  # a float: shared executables
