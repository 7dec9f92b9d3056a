"""Small finished studies for report tests, built once per module into a tmp SQLite file."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.image
import numpy as np
import pytest

import studyhall
from tests.conftest import beale_spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Built:
    name: str
    url: str

    def handle(self):
        return studyhall.open_study(self.name, self.url)


def curves_spec(name: str) -> dict:
    """The grid article's shape: batch size x dropout (x lr), learning curves, threshold pruning.

    18 grid points; the threshold (3.0 after 2 warm-up steps) prunes the worst few.
    """
    return {
        "name": name,
        "objective": "tests.reports.objectives:curve",
        "space": {"batch_size": [4, 16, 32],
                  "dropout": {"low": 0.0, "high": 0.6, "grid": [0.0, 0.3, 0.6]},
                  "lr": [0.1, 1.0]},
        "sampler": "grid",
        "pruner": {"name": "threshold", "upper": 3.0, "n_warmup_steps": 2},
        "seed": 1,
    }


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Built]:
    url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'studies.db'}"
    built = {}
    for key, spec in {
        "curves": curves_spec("curves"),
        "beale": beale_spec("beale", n_trials=25),
        "multi": {"name": "multi", "objective": "tests.objectives.helpers:two_values",
                  "space": {"a": {"low": -2.0, "high": 2.0}, "b": [1, 2]},
                  "directions": ["minimize", "minimize"], "sampler": "nsga2", "n_trials": 16,
                  "seed": 3},
    }.items():
        studyhall.run_study(spec, storage=url)
        built[key] = Built(spec["name"], url)
    return built


def assert_real_png(path) -> np.ndarray:
    """The file is a PNG that matplotlib reads back, with more than one colour in it."""
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.02, f"{path} is blank"
    return image
