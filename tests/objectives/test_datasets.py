import os
import subprocess
import sys

import numpy as np

from studyhall.objectives import datasets

_SCRIPT = """
import hashlib, sys
from studyhall.objectives.datasets import folds, holdout
splits = (holdout("breast_cancer", 0.2, 42), *folds("breast_cancer", 3, 7))
digest = hashlib.sha256(b"".join(a.tobytes() for h in splits
                                 for a in (h.x_train, h.y_train, h.x_val, h.y_val)))
print(digest.hexdigest(), "sklearn" in sys.modules)
"""


def _run(env_dir):
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         check=True, env={**os.environ, "STUDYHALL_DATA": env_dir})
    digest, imported = out.stdout.split()
    return digest, imported == "True"


def test_a_stored_split_is_read_back_exactly_without_importing_scikit_learn(tmp_path):
    first, imported_first = _run(str(tmp_path))
    second, imported_second = _run(str(tmp_path))
    assert imported_first and not imported_second
    assert first == second
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 2


def test_a_corrupt_stored_split_is_computed_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path))
    datasets.holdout.cache_clear()
    fresh = datasets.holdout("breast_cancer", 0.25, 3)
    (stored,) = (tmp_path / "splits").glob("*.npz")
    stored.write_bytes(b"not a zip file")
    datasets.holdout.cache_clear()
    again = datasets.holdout("breast_cancer", 0.25, 3)
    np.testing.assert_array_equal(again.x_val, fresh.x_val)
    with np.load(stored) as z:
        np.testing.assert_array_equal(z["0_x_val"], fresh.x_val)
    datasets.holdout.cache_clear()


def test_an_unwritable_data_dir_still_gives_the_split(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the directory would go")
    monkeypatch.setenv("STUDYHALL_DATA", str(blocked))
    datasets.holdout.cache_clear()
    split = datasets.holdout("breast_cancer", 0.2, 42)
    assert split.x_train.shape == (455, 30)
    datasets.holdout.cache_clear()


def test_a_split_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    datasets.holdout.cache_clear()
    split = datasets.holdout("breast_cancer", 0.2, 42)
    assert split.x_train.shape == (455, 30)
    assert list((tmp_path / "splits").iterdir()) == []
    datasets.holdout.cache_clear()
