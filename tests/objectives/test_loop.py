"""The compiled training loop: a plain perceptron's own forward pass against Keras' layers."""

from __future__ import annotations

import numpy as np
import pytest

from studyhall.objectives import _keras, _loop
from studyhall.objectives.datasets import breast_cancer


def _data():
    d = breast_cancer()
    return d, (d.x_train, d.y_train, d.x_val, d.y_val)


def _train(activation="relu", dropout=0.0, init="glorot_uniform", epochs=4, units=8):
    d, data = _data()
    _keras.new_session(7)
    model = _keras.build_mlp(d.n_features, units=units, layers=2, activation=activation,
                             dropout=dropout, kernel_initializer=init, output_activation=None)
    logs = []
    _loop.train(model, _keras.make_optimizer("sgd", 0.05, momentum=0.5), data,
                loss="binary_logits", epochs=epochs, batch_size=32, seed=11,
                on_epoch=lambda epoch: logs.append(epoch) and False)
    return [log.loss for log in logs], [log.val_accuracy for log in logs], model


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid", "selu", "gelu"])
def test_the_own_forward_pass_trains_what_keras_layers_train(activation, monkeypatch):
    ours, ours_acc, ours_model = _train(activation)
    monkeypatch.setattr(_loop, "_plain", lambda model: None)  # Keras' stateless_call instead
    theirs, theirs_acc, theirs_model = _train(activation)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert ours_acc == theirs_acc
    for a, b in zip(ours_model.get_weights(), theirs_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_one_compiled_epoch_serves_linear_and_relu_every_dropout_and_initializer():
    _loop._CACHE.clear()
    runs = {
        (act, rate, init): _train(act, rate, init)[0]
        for act, rate, init in [("relu", 0.0, "glorot_uniform"), ("linear", 0.3, "he_normal"),
                                ("relu", 0.6, "glorot_uniform"), ("linear", 0.0, "lecun_normal")]
    }
    assert len(_loop._CACHE) == 1
    assert len({tuple(losses) for losses in runs.values()}) == len(runs)  # each its own maths
    assert _train("relu", 0.6)[0] == runs["relu", 0.6, "glorot_uniform"]  # seeded: exact again
    _train("tanh", 0.3)
    _train("tanh", 0.0, "he_normal")
    assert len(_loop._CACHE) == 2  # another activation compiles its own, once


def test_the_cache_keeps_the_most_recently_used_shapes_within_its_layers(monkeypatch):
    _loop._CACHE.clear()
    monkeypatch.setattr(_loop, "_CACHE_LAYERS", 6)  # two of _train's 3-layer networks
    first = _train(units=3)[0]
    _train(units=4)
    assert _train(units=3)[0] == first  # a hit: the same compiled epoch, the same maths
    _train(units=5)  # evicts units=4, the least recently used
    assert [("[3]" in k, "[5]" in k) for k in _loop._CACHE] == [(True, False), (False, True)]
    assert [layers for _, layers in _loop._CACHE.values()] == [3, 3]
    assert _train(units=4)[0] == _train(units=4)[0]  # evicted and met again: compiled anew
    monkeypatch.setattr(_loop, "_CACHE_LAYERS", 0)
    _train(units=6)
    assert len(_loop._CACHE) == 1  # the newest stays, whatever it costs


def _dropout_net(width, rate):
    """An identity perceptron with a Dropout between its layers: the forward pass, its
    weights and its knobs."""
    k = _keras.keras()
    model = k.Sequential([k.Input((width,)), k.layers.Dense(width, kernel_initializer="identity"),
                          k.layers.Dropout(rate),
                          k.layers.Dense(width, kernel_initializer="identity")])
    layout = _loop._plain(model)
    assert layout is not None and layout.rates == (0.0, rate)
    knobs = (np.array(layout.selected, np.int32), np.array(layout.rates, np.float32))
    return _loop._plain_forward(layout), [v.value for v in model.trainable_variables], knobs


def test_dropout_zeroes_its_share_of_units_and_scales_the_rest():
    import jax

    forward, weights, knobs = _dropout_net(200, 0.3)
    x = np.ones((500, 200), np.float32)
    out, _ = forward(weights, [], x, knobs, jax.random.PRNGKey(0), True)
    out = np.asarray(out)
    assert abs(float((out == 0).mean()) - 0.3) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)
    kept, _ = forward(weights, [], x, knobs, jax.random.PRNGKey(0), False)
    np.testing.assert_array_equal(np.asarray(kept), x)  # no dropout when not training


def test_dropout_masks_come_from_a_hash_independent_across_steps_and_layers():
    import jax

    forward, weights, knobs = _dropout_net(300, 0.5)
    x = np.ones((400, 300), np.float32)

    def dropped(key):
        out, _ = forward(weights, [], x, knobs, np.array(key, np.uint32), True)
        return np.asarray(out) == 0

    # Another layer's key differs from this one's in its first word, as another trial's does.
    one, next_step, other_trial = dropped([7, 100]), dropped([7, 101]), dropped([8, 100])
    assert abs(one.mean() - 0.5) < 0.01
    for other in (next_step, other_trial):  # as if drawn apart: both dropped a quarter
        assert abs((one & other).mean() - 0.25) < 0.01
    assert abs((one[:, :-1] & one[:, 1:]).mean() - 0.25) < 0.01  # neighbours too
    np.testing.assert_array_equal(dropped([7, 100]), one)  # the same key, the same mask
    lowered = jax.jit(forward, static_argnums=5).lower(weights, [], x, knobs,
                                                       np.zeros(2, np.uint32), True)
    assert "threefry" not in lowered.as_text()


def test_a_small_network_compiles_with_cheap_options_and_without_a_switch_this_xla_lacks(
        monkeypatch):
    used = []
    real = _loop._compile

    def compile_spy(*args):
        used.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_loop, "_compile", compile_spy)
    monkeypatch.setattr(_keras, "_cache_dir", None)  # no stored epochs: every shape compiles
    _loop._CACHE.clear()
    first = _train(units=11)[0]
    assert used == [_loop._SMALL_OPTIONS[0]]
    assert used[0]["xla_cpu_use_fusion_emitters"] is False
    # An XLA that does not know an option refuses the compile: the next settings are used, and
    # kept for the rest of the process.
    monkeypatch.setattr(_loop, "_SMALL_OPTIONS", [{"xla_no_such_switch": True},
                                                  *_loop._SMALL_OPTIONS])
    _loop._CACHE.clear()
    used.clear()
    assert _train(units=11)[0] == pytest.approx(first, rel=1e-5)
    assert used == [{"xla_no_such_switch": True}, _loop._SMALL_OPTIONS[0]]
    assert "xla_no_such_switch" not in str(_loop._SMALL_OPTIONS)
    monkeypatch.setattr(_loop, "SMALL_BELOW", 0)  # "big": XLA's defaults
    _loop._CACHE.clear()
    used.clear()
    _train(units=11)
    assert used == [None]


def _double(v):
    return v * 2


def test_models_the_own_forward_pass_does_not_cover_go_through_keras():
    k = _keras.keras()
    assert _loop._plain(k.Sequential([k.Input((4,)), k.layers.Flatten(), k.layers.Dropout(0.2),
                                      k.layers.Dense(3)])) is not None  # the MNIST MLP's shape
    others = {
        "batch norm": [k.layers.Dense(3), k.layers.BatchNormalization(), k.layers.Dense(1)],
        "regulariser": [k.layers.Dense(3, kernel_regularizer="l2"), k.layers.Dense(1)],
        "trailing dropout": [k.layers.Dense(3), k.layers.Dropout(0.5)],
        "custom activation": [k.layers.Dense(3, activation=_double), k.layers.Dense(1)],
        "two dropouts": [k.layers.Dense(3), k.layers.Dropout(0.1), k.layers.Dropout(0.1),
                         k.layers.Dense(1)],
    }
    for name, layers in others.items():
        assert _loop._plain(k.Sequential([k.Input((4,)), *layers])) is None, name
    frozen = k.Sequential([k.Input((4,)), k.layers.Dense(3), k.layers.Dense(1)])
    frozen.layers[0].trainable = False
    assert _loop._plain(frozen) is None


def test_data_reaches_the_device_without_a_compile(caplog):
    import jax

    _keras.keras()
    array = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)  # a shape no other test has
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("DEBUG"):
            on_device = _loop._on_device(array)
    finally:
        jax.config.update("jax_log_compiles", False)
        _loop._DEVICE_DATA.pop(id(array), None)
    np.testing.assert_array_equal(np.asarray(on_device), array)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
