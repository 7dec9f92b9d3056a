"""Data sets, loaded once per process and kept as float32 arrays ready for Keras."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Holdout", "breast_cancer"]


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


@lru_cache(maxsize=8)
def breast_cancer(test_size: float = 0.2, split_seed: int = 42) -> Holdout:
    """scikit-learn's Wisconsin breast-cancer data (569 x 30), stratified holdout.

    The split seed is fixed per study (not per trial) so every trial is scored on the same rows.
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=split_seed
    )
    scaler = StandardScaler().fit(x_tr)
    return Holdout(
        x_train=scaler.transform(x_tr).astype(np.float32),
        y_train=y_tr.astype(np.float32),
        x_val=scaler.transform(x_va).astype(np.float32),
        y_val=y_va.astype(np.float32),
    )
