"""Data sets, loaded once per process and kept as float32 arrays ready for Keras.

Every split (a holdout or the K folds of cross-validation) is cached too: the compiled JAX loop
keeps each array on the device by identity, so the same split must be the same array object in
every trial of a process. A split is also stored on disk (``data_dir() / "splits"``), keyed by
its arguments and scikit-learn's version, because computing it means importing scikit-learn and
SciPy: 0.6-0.8 s of every new process here, against 0.7 ms to read the stored arrays. That was
most of a worker's first breast-cancer trial.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from studyhall.objectives._atomic import write_atomically

__all__ = ["DATASETS", "Holdout", "breast_cancer", "classification", "data_dir", "folds",
           "holdout"]

_logger = logging.getLogger(__name__)


def data_dir() -> Path:
    """Where data sets are cached: ``$STUDYHALL_DATA``, else ``~/.cache/studyhall``."""
    env = os.environ.get("STUDYHALL_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "studyhall"


@dataclass(frozen=True)
class Holdout:
    """A train/validation split; features standardised with the training half's statistics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _breast_cancer_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return x, y


def _classification_xy() -> tuple[np.ndarray, np.ndarray]:
    # The randomized-optimization articles' problem, exactly as they generate it.
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=1000, n_features=5, n_informative=2, n_redundant=1, random_state=1
    )
    return x, y


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": _breast_cancer_xy,
    "classification": _classification_xy,
}
"""Name -> loader of the full (x, y) arrays."""


@lru_cache(maxsize=4)
def _xy(name: str) -> tuple[np.ndarray, np.ndarray]:
    return DATASETS[name]()


def _standardised(
    x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray
) -> Holdout:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    return Holdout(
        x_train=scaler.transform(x_tr).astype(np.float32),
        y_train=y_tr.astype(np.float32),
        x_val=scaler.transform(x_va).astype(np.float32),
        y_val=y_va.astype(np.float32),
    )


_FIELDS = tuple(f.name for f in fields(Holdout))


def _stored(what: str, compute: Callable[[], tuple[Holdout, ...]]) -> tuple[Holdout, ...]:
    """The splits ``compute`` returns, read from disk when an earlier process stored them.

    A missing, unreadable or foreign file is computed again (and replaced where the directory
    is writable); the arrays are stored exactly, so both ways give the same values.
    """
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    key = hashlib.sha256(f"{what} sklearn-{version} v1".encode()).hexdigest()[:24]
    path = data_dir() / "splits" / f"{key}.npz"
    try:
        with np.load(path) as z:
            return tuple(Holdout(*(z[f"{i}_{f}"] for f in _FIELDS)) for i in range(int(z["n"])))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    splits = compute()
    arrays = {f"{i}_{f}": getattr(h, f) for i, h in enumerate(splits) for f in _FIELDS}
    buffer = io.BytesIO()
    np.savez(buffer, n=len(splits), **arrays)
    try:
        write_atomically(path, buffer.getvalue())
    except OSError as exc:
        _logger.debug("split %s not stored: %s", what, exc)
    return splits


@lru_cache(maxsize=16)
def holdout(name: str, test_size: float, split_seed: int) -> Holdout:
    """Data set ``name`` split once, stratified; the seed is fixed per study, not per trial,
    so every trial is scored on the same rows."""

    def compute() -> tuple[Holdout, ...]:
        from sklearn.model_selection import train_test_split

        x, y = _xy(name)
        x_tr, x_va, y_tr, y_va = train_test_split(
            x, y, test_size=test_size, stratify=y, random_state=split_seed
        )
        return (_standardised(x_tr, y_tr, x_va, y_va),)

    return _stored(f"holdout {name} {test_size!r} {split_seed}", compute)[0]


@lru_cache(maxsize=16)
def folds(name: str, k: int, split_seed: int) -> tuple[Holdout, ...]:
    """The K stratified folds of the whole data set (as ``GridSearchCV(cv=K)`` would score),
    shuffled by ``split_seed``; each fold is standardised with its own training part."""

    def compute() -> tuple[Holdout, ...]:
        from sklearn.model_selection import StratifiedKFold

        x, y = _xy(name)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=split_seed)
        return tuple(_standardised(x[tr], y[tr], x[va], y[va])
                     for tr, va in splitter.split(x, y))

    return _stored(f"folds {name} {k} {split_seed}", compute)


def breast_cancer(test_size: float = 0.2, split_seed: int = 42) -> Holdout:
    """scikit-learn's Wisconsin breast-cancer data (569 x 30), stratified holdout."""
    return holdout("breast_cancer", float(test_size), int(split_seed))


def classification(test_size: float = 0.33, split_seed: int = 1) -> Holdout:
    """``make_classification(n_samples=1000, n_features=5, n_informative=2, n_redundant=1,
    random_state=1)``, split 67/33 as the randomized-optimization articles do."""
    return holdout("classification", float(test_size), int(split_seed))
