"""Importing Keras: what it loads at once and what waits until it is used."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from studyhall.objectives._keras import _collector_paused, _deferred


def test_what_keras_imports_but_no_trial_uses_loads_on_first_use():
    code = (
        "import sys; from studyhall.objectives._keras import _DeferringFinder, keras; keras(); "
        "print('LOADED', sorted(n for n in ('matplotlib', 'h5py', 'requests', "
        "'jax.experimental.pallas', 'keras._tf_keras', 'keras.applications', "
        "'keras.datasets', 'pandas', 'scipy', 'jax.experimental.sparse.linalg', 'rich') "
        "if n in sys.modules)); "
        "print('FINDERS', sum(isinstance(f, _DeferringFinder) for f in sys.meta_path)); "
        "import gc; print('COLLECTOR', gc.isenabled()); "
        "from keras.src.visualization import plot_image_gallery as gallery; "
        "from keras.src.legacy.saving import legacy_h5_format as h5; "
        "from keras.src.backend.jax import nn; "
        "import matplotlib.pyplot as plt; fig, ax = plt.subplots(); "
        "print('USED', type(fig).__name__, type(gallery.plt.gcf()).__name__, "
        "type(sys.modules['matplotlib.pyplot']).__name__, h5.h5py.File.__name__, "
        "nn.splash_attention_mask.NumpyMask.__name__, "
        "gallery.plt.subplots is plt.subplots); "
        "import keras; from keras.quantizers import AbsMaxQuantizer; "
        "print('API', keras.applications.MobileNetV2.__name__, "
        "keras._tf_keras.keras.layers.Dense is keras.layers.Dense, "
        "type(keras.applications).__name__, AbsMaxQuantizer.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MPLBACKEND": "Agg",
                                              "KERAS_BACKEND": "jax"})
    out = result.stdout
    assert "LOADED []" in out, out + result.stderr
    assert "FINDERS 0" in out  # gone once Keras is in: later imports are plain ones
    assert "COLLECTOR True" in out  # paused for the import only
    assert "USED Figure Figure module File NumpyMask True" in out, out + result.stderr
    # Keras' namespaces no trial uses load at their first use, and are then the real ones.
    assert "API MobileNetV2 True module AbsMaxQuantizer" in out, out + result.stderr


def test_keras_still_fits_on_a_dataframe_prints_summaries_and_solves_sparse_systems():
    code = (
        "import sys; from studyhall.objectives._keras import keras; k = keras(); "
        "from keras.src.trainers.data_adapters import array_slicing as s; import numpy as np; "
        "print('BEFORE', 'pandas' in sys.modules, isinstance(np.zeros(2), s.ARRAY_TYPES), "
        "isinstance([1], s.ARRAY_TYPES)); "
        "import pandas as pd; x = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0]}); "
        "y = pd.Series([0.0, 1.0, 0.0, 1.0]); "
        "print('AFTER', isinstance(x, s.ARRAY_TYPES), isinstance(y, s.pandas.Series), "
        "issubclass(pd.DataFrame, s.pandas.DataFrame), issubclass(int, s.pandas.DataFrame)); "
        "m = k.Sequential([k.Input((1,)), k.layers.Dense(1)]); m.compile('sgd', 'mse'); "
        "h = m.fit(x, y, epochs=2, batch_size=2, verbose=0); print('FIT', len(h.history['loss'])); "
        "m.summary(); "
        "from jax.experimental import sparse; import jax.numpy as jnp; "
        "a = sparse.BCSR.fromdense(jnp.array([[2.0, 0.0], [0.0, 4.0]])); "
        "print('SOLVE', sparse.linalg.spsolve(a.data, a.indices, a.indptr, "
        "jnp.array([2.0, 4.0])).tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "KERAS_BACKEND": "jax"})
    out = result.stdout
    # Nothing can be a DataFrame before pandas is imported: the answer costs no import.
    assert "BEFORE False True False" in out, out + result.stderr
    assert "AFTER True True True False" in out, out + result.stderr
    assert "FIT 2" in out, out + result.stderr
    assert "Total params: 4" in out, out + result.stderr  # rich's table
    assert "SOLVE [1.0, 1.0]" in out, out + result.stderr


def test_a_deferred_package_that_is_not_installed_stays_missing():
    with _deferred(["studyhall_no_such_package"]), pytest.raises(ImportError):
        import studyhall_no_such_package  # noqa: F401 - Keras' "try: import ... except"
    assert "studyhall_no_such_package" not in sys.modules


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_inside_and_left_as_it_was(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(ZeroDivisionError), _collector_paused():
            assert not gc.isenabled()
            1 / 0  # noqa: B018 - an import that fails
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_save_after_the_first_builds_no_reference_layers(tmp_path, monkeypatch):
    import numpy as np

    from studyhall.objectives._keras import build_mlp, keras

    k = keras()
    from keras.src.layers.layer import Layer

    model = build_mlp(4, units=3, layers=1, activation="relu", dropout=0.5)
    model.save(tmp_path / "first.keras")
    built: list[str] = []
    init = Layer.__init__

    def counting(self, *args, **kwargs):
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__init__", counting)
    model.save(tmp_path / "second.keras")
    assert built == []  # Keras' own cache misses: a reference Layer() at every save
    monkeypatch.undo()
    loaded = k.models.load_model(tmp_path / "second.keras")
    for saved, read in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, read)
