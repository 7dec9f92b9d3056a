"""The code stays lint- and type-clean: ruff (pyproject's [tool.ruff]) and mypy ([tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "studyhall", "tests", "benchmarks")
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # ~45 s without a .mypy_cache, ~1 s with one
def test_mypy_finds_nothing():
    result = _run("mypy", "studyhall", "benchmarks")
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
