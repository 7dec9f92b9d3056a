"""Compiled epochs kept on disk by network signature, shared by every worker on a machine.

JAX's persistent compile cache is keyed by the lowered program, so finding an epoch there still
traces and lowers it first: 130-140 ms of a 30-64-1 breast-cancer network's 170 ms "cache hit"
(measured here), and the tracing fills JAX's in-memory caches, which ``_loop.train`` then
clears, so the next model build recompiles Keras' initialiser operations (100-160 ms more).
Each worker process pays that once per network shape, and two workers on one study pay it
twice. Here the executable is stored under ``_loop``'s own signature of the network (plus the
argument shapes, the source of this module, of ``_loop`` and of every class whose code the
epoch runs: layers, optimizer, learning-rate schedule; the library versions, the compile
options and the XLA flags they leave in force, the processor), so a worker that meets a shape
another worker, or an earlier run, compiled loads it without tracing anything.

The files live in ``epochs/`` of the persistent cache directory (``STUDYHALL_JAX_CACHE``; ``off``
disables both). They are pickles, trusted as JAX trusts its own cache directory; one that cannot
be read is compiled again and replaced. A file is written to a temporary name and renamed, so a
reader never sees half of one. An epoch compiled to be stored here skips JAX's cache: an
executable JAX loaded from there serializes without its kernels (its calls then fail with
"NOT_FOUND: Function ... not found", seen with jaxlib 0.10 on the CPU). Should a stored file
ever load but fail that way, its trials fail with XLA's message; deleting ``epochs/`` (or
``STUDYHALL_JAX_CACHE=off``) compiles afresh.

A process starts loading the ``PREFETCH`` epochs used last (``prefetch``, from ``_keras.keras``
before Keras' own import) on a thread of its own: XLA deserializes without holding the GIL, so
this runs on the second core beside Keras' import and the first trials, where each new shape's
load on the trial's thread cost 13-23 ms (8 of them in a P3 TPE search of 20 trials). A load
marks its file used (its mtime), so "used last" is what the last runs met. That thread also runs
each small epoch it loads once, on zeros (``_first_call``); a trial whose epoch is still queued
loads it itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import pickle
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from studyhall.objectives._atomic import write_atomically

__all__ = ["compile_and_store", "forget_prefetched", "load", "prefetch"]

_logger = logging.getLogger(__name__)

PREFETCH = 9
"""Stored epochs a process loads ahead: the seed grid's 9 shapes. A small network's executable
takes ~5 MB; the ones no trial claims are dropped once the compiled-epoch cache is full."""
_prefetched: dict[str, Future[Any]] = {}


@functools.cache
def _environment() -> str:
    """What an executable compiled here depends on besides the network: code and machine."""
    import platform

    import jax
    import jaxlib
    import keras

    from studyhall.objectives import _loop

    sources = Path(__file__).read_bytes() + Path(_loop.__file__).read_bytes()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    parts = [hashlib.sha256(sources).hexdigest(), jax.__version__, jaxlib.__version__,
             keras.__version__, jax.devices()[0].client.platform_version, platform.machine(),
             flags]
    return "\n".join(parts)


def _xla_settings(options: Mapping[str, Any] | None) -> str:
    """The compile options, and the ``XLA_FLAGS`` they leave in force.

    A flag the options set is not part of the key: ``limit_threads`` turns Eigen's threads off
    in the flags of ``run --workers N``'s processes, and a small network, compiled without them
    whatever the flags say, then shares its file with a one-worker run (it compiled every
    shape again, both workers at once, in the first ``run --workers 2`` after a ``run``).
    """
    options = dict(options or {})
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if flag.lstrip("-").split("=", 1)[0] not in options]
    return f"{' '.join(flags)}\n{sorted(options.items())!r}"


@functools.cache
def _source(cls: type) -> str:
    """A digest of the file that defines ``cls`` (its code is part of the compiled epoch)."""
    import inspect

    try:
        return hashlib.sha256(Path(inspect.getfile(cls)).read_bytes()).hexdigest()
    except (OSError, TypeError):  # defined interactively: its name, then, and no more
        return f"{cls.__module__}.{cls.__qualname__}"


def _path(directory: str, signature: str, args: Any, code: Sequence[type],
          options: Mapping[str, Any] | None = None) -> Path:
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    shapes = [(getattr(a, "shape", ()), str(getattr(a, "dtype", type(a).__name__)))
              for a in leaves]
    sources = sorted({_source(cls) for cls in code})
    key = "\n".join([_environment(), _xla_settings(options), signature, str(tree),
                     repr(shapes), *sources])
    return Path(directory) / "epochs" / (hashlib.sha256(key.encode()).hexdigest() + ".pickle")


def load(directory: str | None, signature: str, args: Any, code: Sequence[type],
         options: Mapping[str, Any] | None = None) -> Any:
    """The compiled epoch stored for ``signature``, these example ``args``, the classes of
    ``code`` and these compile ``options``, or None."""
    if directory is None:
        return None
    path = _path(directory, signature, args, code, options)
    future = _prefetched.pop(str(path), None)
    if future is not None and future.cancel():
        # Still queued: loading it here beats waiting for the loads ahead of it (the first
        # trial waited 67-94 ms for its shape, last in the queue, in a warm P3 search).
        future = None
    compiled = future.result() if future is not None else None
    if compiled is None:
        compiled = _deserialize(path)
    if compiled is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the next process loads it ahead
    return compiled


def _deserialize(path: Path) -> Any:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    from jax.experimental import serialize_executable

    try:
        serialized, in_tree, out_tree = pickle.loads(blob)
        return serialize_executable.deserialize_and_load(serialized, in_tree, out_tree)
    except Exception as exc:  # a file from an interrupted or foreign writer: compile again
        _logger.debug("compiled epoch %s not loaded (%s); compiling it", path.name, exc)
        return None


FIRST_CALL_BELOW = 1 << 20
"""Bytes of arguments (weights, data) under which a prefetched epoch runs once on zeros: a
breast-cancer epoch's take ~0.1 MB and ~1 ms to run, an MNIST epoch's 190 MB and a second."""


def _first_call(compiled: Any) -> None:
    """Run a small epoch once on zeros, on the prefetch thread: the first trial need not.

    A process's first matrix product makes oneDNN generate its kernels, and an executable's
    first call builds its fast path: 28-47 ms of a process's first epoch here (the first call
    of 4 of 6 stored breast-cancer shapes; 1-2 ms once another had run). XLA runs without the
    GIL, so this runs on the second core beside Keras' import.
    """
    import jax
    import numpy as np

    try:
        info = compiled.args_info
        leaves = jax.tree_util.tree_leaves(info)
        if sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in leaves) \
                >= FIRST_CALL_BELOW:
            return
        args, kwargs = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), info)
        compiled(*args, **kwargs)
    except Exception as exc:  # only a head start is lost: the trial calls it as before
        _logger.debug("prefetched epoch not run ahead: %s", exc)


def _load_ahead(path: Path) -> Any:
    compiled = _deserialize(path)
    if compiled is not None:
        _first_call(compiled)
    return compiled


def prefetch(directory: str | None, limit: int = PREFETCH) -> None:
    """Start loading the ``limit`` epochs stored in ``directory`` that were used last."""
    if directory is None or _prefetched:
        return

    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # replaced or removed meanwhile
            return 0.0

    try:
        files = sorted((Path(directory) / "epochs").glob("*.pickle"), key=used, reverse=True)
    except OSError:
        return
    if not files:
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="studyhall-prefetch")
    _drop_at_exit()
    for path in files[:limit]:
        _prefetched[str(path)] = pool.submit(_load_ahead, path)
    pool.shutdown(wait=False)


def forget_prefetched() -> None:
    """Drop (or no longer load) the prefetched epochs no trial has claimed."""
    for future in list(_prefetched.values()):
        future.cancel()
    _prefetched.clear()


def _drop_at_exit() -> None:
    """At the interpreter's exit, cancel the loads still queued instead of waiting for them.

    ``concurrent.futures`` joins its threads at exit after they ran every queued item: a run
    that ended before its epochs were all loaded waited 20-70 ms a file for epochs nobody would
    use. ``threading._register_atexit`` (what ``concurrent.futures`` uses; its hooks run last
    registered first) cancels them before that join.
    """
    global _exit_hooked
    register = getattr(threading, "_register_atexit", None)
    if _exit_hooked or register is None:
        return
    with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
        register(forget_prefetched)
        _exit_hooked = True


_exit_hooked = False


_CACHE_SWITCH = threading.Lock()


def compile_and_store(directory: str | None, signature: str, args: Any, code: Sequence[type],
                      jitted: Any, options: Mapping[str, Any] | None = None) -> Any:
    """Compile ``jitted`` (jitted with the compile ``options``) for ``args``; keep it for the
    next process that meets ``signature``."""
    if directory is None:
        return jitted.lower(*args).compile()
    import jax
    from jax.experimental import serialize_executable
    from jax.experimental.compilation_cache import compilation_cache

    lowered = jitted.lower(*args)
    with _CACHE_SWITCH:  # the switch is process-wide: a second thread must not flip it back
        enabled = jax.config.values["jax_enable_compilation_cache"]
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()  # JAX decides once whether its cache is used; ask again
        try:
            compiled = lowered.compile()
        finally:
            jax.config.update("jax_enable_compilation_cache", enabled)
            compilation_cache.reset_cache()
    path = _path(directory, signature, args, code, options)
    try:
        write_atomically(path, pickle.dumps(serialize_executable.serialize(compiled)))
    except Exception as exc:  # a read-only or full disk costs the next process a compile only
        _logger.debug("compiled epoch not stored in %s: %s", path.parent, exc)
    return compiled
