"""N workers on N cores: a worker limited to one thread keeps XLA's CPU pool to one thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_COUNT_POOL = (
    "from studyhall.studies.worker import limit_threads\n"
    "{limit}\n"
    "from tests.objectives.test_loop import _train\n"
    "_train(units=64)\n"
    "import glob\n"
    "names = [open(t + '/comm').read().strip() for t in glob.glob('/proc/self/task/*')]\n"
    "print('POOL', names.count('tf_XLAEigen'))\n"
)


def _pool_threads(limit: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", _COUNT_POOL.format(limit=limit)], env=env,
                         capture_output=True, text=True, timeout=300, check=True,
                         cwd=Path(__file__).parents[2]).stdout
    return int(next(line for line in out.splitlines() if line.startswith("POOL")).split()[1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_one_thread_means_one_xla_pool_thread():
    assert _pool_threads("limit_threads(1)") == 1
    assert _pool_threads("") == len(os.sched_getaffinity(0))  # unlimited: every core
