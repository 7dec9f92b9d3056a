"""Compiled epochs on disk: a worker meeting a shape that another process compiled loads it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studyhall.objectives import _executables, _keras, _loop

from .test_loop import _train


@pytest.fixture
def epoch_store(tmp_path, monkeypatch):
    """A fresh store and an empty in-memory cache: the next compile is this test's."""
    _keras.keras()
    monkeypatch.setattr(_keras, "_cache_dir", str(tmp_path))
    _loop._CACHE.clear()
    _executables.forget_prefetched()
    yield tmp_path / "epochs"
    _loop._CACHE.clear()
    _executables.forget_prefetched()


def _refuse_compiles(monkeypatch):
    def compile_again(*args, **kwargs):
        raise AssertionError("compiled, though the epoch was stored")

    monkeypatch.setattr(_loop, "_compile", compile_again)


def test_a_stored_epoch_trains_exactly_what_the_compiled_one_trained(epoch_store, monkeypatch):
    losses, accuracy, _ = _train(units=5)
    assert len(list(epoch_store.glob("*.pickle"))) == 1
    _loop._CACHE.clear()  # as a new worker process starts
    _refuse_compiles(monkeypatch)
    again, again_accuracy, _ = _train(units=5)
    assert again == losses and again_accuracy == accuracy


def test_another_shape_or_batch_size_is_another_file(epoch_store):
    _train(units=5)
    _train(units=6)
    assert len(list(epoch_store.glob("*.pickle"))) == 2


def test_a_shape_stored_without_dropout_serves_the_same_shape_with_dropout(epoch_store,
                                                                             monkeypatch):
    # A rate of 0 builds no Dropout layer; one compiled epoch serves every rate (test_loop.py),
    # so one file must too, whichever model met the shape first.
    _train(units=5, dropout=0.0)
    _loop._CACHE.clear()
    _refuse_compiles(monkeypatch)
    _train(units=5, dropout=0.3)
    assert len(list(epoch_store.glob("*.pickle"))) == 1


def test_a_small_network_s_file_serves_a_worker_whose_flags_turn_eigen_s_threads_off(
        epoch_store, monkeypatch):
    # ``limit_threads`` sets that flag in the processes of ``run --workers N``; a small
    # network is compiled without those threads anyway, so one file serves 1 worker and N.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    losses = _train(units=5)[0]
    _loop._CACHE.clear()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    _refuse_compiles(monkeypatch)
    assert _train(units=5)[0] == losses
    assert len(list(epoch_store.glob("*.pickle"))) == 1


def test_an_xla_without_the_emitter_switch_finds_the_epochs_it_stored(epoch_store,
                                                                      monkeypatch):
    # It refuses the first settings and stores with the next; each new process starts from
    # the first again.
    lacking = [{"xla_no_such_switch": True}, *_loop._SMALL_OPTIONS]
    monkeypatch.setattr(_loop, "_SMALL_OPTIONS", list(lacking))
    losses = _train(units=5)[0]
    assert len(list(epoch_store.glob("*.pickle"))) == 1
    monkeypatch.setattr(_loop, "_SMALL_OPTIONS", list(lacking))
    _loop._CACHE.clear()
    _refuse_compiles(monkeypatch)
    assert _train(units=5)[0] == losses


def test_the_flags_the_compile_options_leave_in_force_name_the_file(tmp_path, monkeypatch):
    args = (np.zeros(3, np.float32),)
    small = {"xla_cpu_multi_thread_eigen": False}

    def path(flags, options):
        monkeypatch.setenv("XLA_FLAGS", flags)
        return _executables._path(str(tmp_path), "signature", args, (), options)

    assert path("--xla_cpu_multi_thread_eigen=false", small) == path("", small)
    assert path("--xla_cpu_multi_thread_eigen=false", None) != path("", None)  # a big network
    assert path("--xla_cpu_enable_fast_math=true", small) != path("", small)
    assert path("", small) != path("", None)
    assert path("", small) != path("", {"xla_cpu_multi_thread_eigen": True})


def test_an_unreadable_file_is_compiled_again_and_replaced(epoch_store, monkeypatch):
    losses = _train(units=5)[0]
    (path,) = epoch_store.glob("*.pickle")
    path.write_bytes(b"half a pickle")
    _loop._CACHE.clear()
    assert _train(units=5)[0] == losses
    _loop._CACHE.clear()
    _refuse_compiles(monkeypatch)
    assert _train(units=5)[0] == losses


def test_no_store_when_the_cache_is_off(tmp_path, monkeypatch):
    _keras.keras()
    monkeypatch.setattr(_keras, "_cache_dir", None)
    _loop._CACHE.clear()
    _train(units=5)
    assert not list(tmp_path.rglob("*.pickle"))
    _loop._CACHE.clear()


def test_a_new_process_loads_the_epoch_without_tracing(tmp_path):
    script = (
        "import jax, sys\n"
        "from studyhall.objectives import _loop\n"
        "from tests.objectives.test_loop import _train\n"
        "traced = []\n"
        "real = _loop._compile\n"
        "_loop._compile = lambda *a, **k: traced.append(1) or real(*a, **k)\n"
        "print('LOSSES', _train(units=5)[0], 'TRACED', len(traced))\n"
    )
    env = {"STUDYHALL_JAX_CACHE": str(tmp_path), "KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"}

    def run() -> str:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=300, check=True,
                             cwd=Path(__file__).parents[2]).stdout
        return next(line for line in out.splitlines() if line.startswith("LOSSES"))

    first, second = run(), run()
    assert first.endswith("TRACED 1") and second.endswith("TRACED 0")
    assert first.split("TRACED")[0] == second.split("TRACED")[0]


def test_a_change_to_a_layers_code_is_another_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "studyhall_test_layer.py"
    source.write_text("class Layer:\n    scale = 1\n")
    module = importlib.import_module("studyhall_test_layer")
    args = (np.zeros(3, np.float32),)
    first = _executables._path(str(tmp_path), "signature", args, [module.Layer])
    assert _executables._path(str(tmp_path), "signature", args, [module.Layer]) == first
    source.write_text("class Layer:\n    scale = 2\n")
    module = importlib.reload(module)
    assert _executables._path(str(tmp_path), "signature", args, [module.Layer]) != first


def test_threads_compiling_at_once_leave_jax_s_cache_switch_as_it_was(tmp_path):
    # compile_and_store turns JAX's compile cache off around each compile: two threads
    # interleaving save-off-restore would leave it off for the rest of the process.
    import threading

    import jax

    _keras.keras()
    before = jax.config.values["jax_enable_compilation_cache"]
    jax.config.update("jax_enable_compilation_cache", True)
    try:
        start = threading.Barrier(6)

        def compile_one(k: int) -> None:
            start.wait()
            jitted = jax.jit(lambda x: x * k + k)
            for n in range(3):
                _executables.compile_and_store(str(tmp_path), f"t{k}-{n}",
                                               (np.ones(n + 1, np.float32),), (), jitted)

        threads = [threading.Thread(target=compile_one, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert jax.config.values["jax_enable_compilation_cache"] is True
    finally:
        jax.config.update("jax_enable_compilation_cache", before)


def _new_file(store: Path, before: set[Path]) -> Path:
    (path,) = set(store.glob("*.pickle")) - before
    return path


def test_a_process_loads_the_epochs_used_last_ahead_and_a_trial_takes_its_own(epoch_store,
                                                                              monkeypatch):
    files = {}
    for units in (5, 6, 7):
        before = set(epoch_store.glob("*.pickle"))
        losses = _train(units=units)[0]
        files[units] = (_new_file(epoch_store, before), losses)
    for when, units in enumerate((7, 5, 6)):  # used last: 6, then 5
        os.utime(files[units][0], (1_000_000 + when, 1_000_000 + when))
    _loop._CACHE.clear()
    _executables.prefetch(str(epoch_store.parent), limit=2)
    assert set(_executables._prefetched) == {str(files[6][0]), str(files[5][0])}
    for future in list(_executables._prefetched.values()):
        assert future.result() is not None

    def read_again(path):
        raise AssertionError(f"{path.name} read again, though it was loaded ahead")

    monkeypatch.setattr(_executables, "_deserialize", read_again)
    _refuse_compiles(monkeypatch)
    assert _train(units=6)[0] == files[6][1]
    assert set(_executables._prefetched) == {str(files[5][0])}
    assert files[6][0].stat().st_mtime > 1_000_002  # used now: first to load next time


def test_a_small_epoch_loaded_ahead_runs_once_on_zeros_there_and_a_big_one_does_not(
        epoch_store, monkeypatch):
    # Its first call (oneDNN's kernels, the executable's fast path) is then not the trial's.
    import jax

    _train(units=5)
    _loop._CACHE.clear()
    calls = []
    deserialize = _executables._deserialize

    class Spy:
        def __init__(self, compiled):
            self.args_info = compiled.args_info
            self._compiled = compiled

        def __call__(self, *args, **kwargs):
            calls.append((args, kwargs))
            return self._compiled(*args, **kwargs)

    monkeypatch.setattr(_executables, "_deserialize", lambda path: Spy(deserialize(path)))
    for bound, runs in ((_executables.FIRST_CALL_BELOW, 1), (1_000, 1)):  # ~10 KB of data
        monkeypatch.setattr(_executables, "FIRST_CALL_BELOW", bound)
        _executables.prefetch(str(epoch_store.parent))
        [future] = _executables._prefetched.values()
        assert isinstance(future.result(), Spy)
        _executables.forget_prefetched()
        assert len(calls) == runs
    [(args, kwargs)] = calls
    leaves = jax.tree_util.tree_leaves((args, kwargs))
    assert len(leaves) > 8 and not any(np.any(leaf) for leaf in leaves)


def test_a_trial_loads_its_epoch_itself_rather_than_wait_behind_the_loads_ahead(
        epoch_store, monkeypatch):
    import threading

    files = {}
    for units in (5, 6):
        before = set(epoch_store.glob("*.pickle"))
        losses = _train(units=units)[0]
        files[units] = (_new_file(epoch_store, before), losses)
        os.utime(files[units][0], (1_000_000 + units, 1_000_000 + units))  # 6 loads first
    _loop._CACHE.clear()
    release, load_ahead = threading.Event(), _executables._load_ahead

    def slow_load(path):
        assert release.wait(60)
        return load_ahead(path)

    monkeypatch.setattr(_executables, "_load_ahead", slow_load)
    _executables.prefetch(str(epoch_store.parent))
    [ahead, queued] = [_executables._prefetched[str(files[u][0])] for u in (6, 5)]
    _refuse_compiles(monkeypatch)
    try:
        assert _train(units=5)[0] == files[5][1]  # the load of 6 still blocks the thread
        assert queued.cancelled() and not ahead.done()
    finally:
        release.set()
    assert ahead.result() is not None


def test_epochs_loaded_ahead_that_no_trial_took_go_once_the_cache_is_full(epoch_store,
                                                                         monkeypatch):
    _train(units=5)
    _loop._CACHE.clear()
    _executables.prefetch(str(epoch_store.parent))
    assert len(_executables._prefetched) == 1
    monkeypatch.setattr(_loop, "_CACHE_LAYERS", 3)  # one 2-layer network and its output
    _train(units=6)  # a new shape: compiled; the cache holds it alone
    assert len(_executables._prefetched) == 1
    _train(units=7)  # the cache is full: the oldest goes, and what was loaded ahead with it
    assert not _executables._prefetched


def test_nothing_is_loaded_ahead_without_a_store(tmp_path):
    _executables.forget_prefetched()
    _executables.prefetch(None)
    _executables.prefetch(str(tmp_path))  # no epochs/ yet
    assert not _executables._prefetched


def test_a_process_ending_before_its_loads_ahead_cancels_the_queued_ones(tmp_path):
    (tmp_path / "epochs").mkdir()
    for n in range(6):
        (tmp_path / "epochs" / f"{n}.pickle").write_bytes(b"x")
    code = (
        "import pathlib, sys, time\n"
        "from studyhall.objectives import _executables\n"
        "def slow(path):\n"
        "    time.sleep(0.3)\n"
        "    (path.parent.parent / ('ran-' + path.stem)).touch()\n"
        "_executables._load_ahead = slow\n"
        "_executables.prefetch(sys.argv[1])\n"
        "print('QUEUED', len(_executables._prefetched))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert "QUEUED 6" in result.stdout, result.stdout + result.stderr
    # The load running at exit ends; the five behind it are not started (all six ran before).
    assert 1 <= len(list(tmp_path.glob("ran-*"))) <= 2
