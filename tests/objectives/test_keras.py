"""Importing Keras: what it loads at once and what waits until it is used."""

from __future__ import annotations

import os
import subprocess
import sys


def test_keras_plotting_modules_load_on_first_use_and_then_work():
    code = (
        "import sys; from studyhall.objectives._keras import _LazyFinder, keras; keras(); "
        "print('LAZY', type(sys.modules['matplotlib.pyplot']).__name__); "
        "print('FINDERS', sum(isinstance(f, _LazyFinder) for f in sys.meta_path)); "
        "from keras.src.visualization import plot_image_gallery as gallery; "
        "import matplotlib.pyplot as plt; fig, ax = plt.subplots(); "
        "print('USED', type(fig).__name__, type(gallery.plt.gcf()).__name__, "
        "type(sys.modules['matplotlib.pyplot']).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    out = result.stdout
    assert "LAZY _LazyModule" in out, out + result.stderr
    assert "FINDERS 0" in out  # gone once Keras is in: later imports are plain ones
    assert "USED Figure Figure module" in out, out + result.stderr
