"""Tests for sktransfer.datasets, without network: downloads use file:// URLs."""

import gzip
import hashlib

import numpy as np
import pytest
from sklearn.datasets import load_digits

from sktransfer import datasets
from sktransfer.datasets import fetch_mnist, make_digits_transfer

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _idx_bytes(array, magic):
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_gz(path, payload):
    path.write_bytes(gzip.compress(payload, mtime=0))
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A fake MNIST mirror in a folder, with the checksum table pointing at it."""
    folder = tmp_path / "remote"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays, md5 = {}, {}
    for subset, n_samples in [("train", 5), ("test", 3)]:
        X = rng.integers(0, 256, size=(n_samples, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n_samples, dtype=np.uint8)
        images, labels = FILES[subset]
        md5[images] = _write_gz(folder / images, _idx_bytes(X, 2051))
        md5[labels] = _write_gz(folder / labels, _idx_bytes(y, 2049))
        arrays[subset] = (X, y)
    table = {"base_url": folder.as_uri() + "/", "md5": md5}
    monkeypatch.setitem(datasets._REMOTE, "mnist", table)
    return {"folder": folder, "arrays": arrays, "table": table}


@pytest.fixture
def data_home(tmp_path):
    return tmp_path / "home"


def _cache(data_home, dataset="mnist"):
    return data_home / "sktransfer" / dataset


def _replace_remote_file(remote, filename, payload):
    """Overwrite a file of the fake mirror and make the table expect it."""
    remote["table"]["md5"][filename] = _write_gz(remote["folder"] / filename, payload)


@pytest.mark.parametrize("subset", ["train", "test"])
def test_fetch_mnist_round_trip(remote, data_home, subset):
    X, y = fetch_mnist("mnist", subset=subset, data_home=data_home)

    X_expected, y_expected = remote["arrays"][subset]
    assert X.dtype == np.uint8
    assert y.dtype == np.int64
    assert X.shape == (len(y_expected), 28, 28)
    np.testing.assert_array_equal(X, X_expected)
    np.testing.assert_array_equal(y, y_expected)
    assert X.flags.writeable
    cached = sorted(path.name for path in _cache(data_home).iterdir())
    assert cached == sorted(FILES[subset])


def test_fetch_mnist_reads_from_cache(remote, data_home):
    X_first, y_first = fetch_mnist(data_home=data_home)
    for path in remote["folder"].iterdir():
        path.unlink()

    X_again, y_again = fetch_mnist(data_home=data_home)
    X_offline, y_offline = fetch_mnist(data_home=data_home, download=False)

    np.testing.assert_array_equal(X_again, X_first)
    np.testing.assert_array_equal(y_again, y_first)
    np.testing.assert_array_equal(X_offline, X_first)
    np.testing.assert_array_equal(y_offline, y_first)


def test_fetch_mnist_keeps_datasets_apart(remote, data_home, monkeypatch):
    monkeypatch.setitem(datasets._REMOTE, "fashion_mnist", remote["table"])

    fetch_mnist("fashion_mnist", subset="test", data_home=data_home)

    assert not _cache(data_home, "mnist").exists()
    cached = sorted(path.name for path in _cache(data_home, "fashion_mnist").iterdir())
    assert cached == sorted(FILES["test"])


def test_fetch_mnist_checksum_mismatch_leaves_no_file(remote, data_home):
    filename = "train-images-idx3-ubyte.gz"
    found = remote["table"]["md5"][filename]
    remote["table"]["md5"][filename] = "0" * 32

    with pytest.raises(OSError, match=rf"{filename} has MD5 checksum {found}.*0{{32}}"):
        fetch_mnist(data_home=data_home)

    assert list(_cache(data_home).iterdir()) == []


def test_fetch_mnist_failed_download_leaves_no_file(remote, data_home):
    (remote["folder"] / "train-images-idx3-ubyte.gz").unlink()

    with pytest.raises(OSError, match=r"Could not download .*train-images-idx3"):
        fetch_mnist(data_home=data_home)

    assert list(_cache(data_home).iterdir()) == []


def test_fetch_mnist_corrupted_cache(remote, data_home):
    X_expected, y_expected = fetch_mnist(data_home=data_home)
    cached = _cache(data_home) / "train-labels-idx1-ubyte.gz"
    cached.write_bytes(b"garbage")

    with pytest.raises(OSError, match=r"train-labels-idx1-ubyte\.gz is corrupted"):
        fetch_mnist(data_home=data_home, download=False)

    X, y = fetch_mnist(data_home=data_home)
    np.testing.assert_array_equal(X, X_expected)
    np.testing.assert_array_equal(y, y_expected)
    assert sorted(path.name for path in _cache(data_home).iterdir()) == sorted(
        FILES["train"]
    )


def test_fetch_mnist_missing_file_without_download(remote, data_home):
    with pytest.raises(FileNotFoundError, match=r"t10k-images.*download=True"):
        fetch_mnist(subset="test", data_home=data_home, download=False)


@pytest.mark.parametrize(
    ("filename", "payload", "match"),
    [
        (
            "train-images-idx3-ubyte.gz",
            _idx_bytes(np.zeros((5, 28, 28)), 2049),
            "magic number is 2049, expected 2051",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            _idx_bytes(np.zeros(5), 2051),
            "magic number is 2051, expected 2049",
        ),
        (
            "train-images-idx3-ubyte.gz",
            _idx_bytes(np.zeros((5, 28, 28)), 2051)[:-1],
            "payload holds 3919 bytes",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            _idx_bytes(np.zeros(5), 2049) + b"\x00",
            "payload holds 6 bytes",
        ),
        (
            "train-images-idx3-ubyte.gz",
            _idx_bytes(np.zeros((5, 27, 28)), 2051),
            r"shape \(27, 28\), expected \(28, 28\)",
        ),
        ("train-labels-idx1-ubyte.gz", b"\x00\x00", "fewer than the 8 bytes"),
        (
            "train-labels-idx1-ubyte.gz",
            _idx_bytes(np.zeros(4), 2049),
            "holds 5 images but .* holds 4 labels",
        ),
    ],
)
def test_fetch_mnist_corrupt_idx(remote, data_home, filename, payload, match):
    _replace_remote_file(remote, filename, payload)

    with pytest.raises(ValueError, match=match):
        fetch_mnist(data_home=data_home)


def test_fetch_mnist_not_gzip(remote, data_home):
    filename = "train-images-idx3-ubyte.gz"
    (remote["folder"] / filename).write_bytes(b"not gzipped")
    remote["table"]["md5"][filename] = hashlib.md5(
        b"not gzipped", usedforsecurity=False
    ).hexdigest()

    with pytest.raises(ValueError, match=rf"{filename} is not a valid gzip file"):
        fetch_mnist(data_home=data_home)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "cifar10"}, r"dataset must be one of .*'mnist'.*got 'cifar10'"),
        ({"dataset": None}, r"dataset must be one of .*got None"),
        (
            {"subset": "valid"},
            r"subset must be one of \['test', 'train'\]; got 'valid'",
        ),
    ],
)
def test_fetch_mnist_bad_arguments(data_home, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fetch_mnist(data_home=data_home, **kwargs)


def test_make_digits_transfer_splits():
    data = make_digits_transfer(n_labels_per_class=7, random_state=0)

    assert set(np.unique(data.y_source)) == {0, 1, 2, 3, 4}
    assert set(np.unique(data.y_target)) == {5, 6, 7, 8, 9}
    assert set(np.unique(data.y_test)) == {5, 6, 7, 8, 9}
    np.testing.assert_array_equal(np.bincount(data.y_target)[5:], [7] * 5)
    for key in ["X_source", "X_target", "X_test"]:
        assert data[key].dtype == np.float32
        assert data[key].shape[1:] == (64,)
        assert data[key].min() >= 0
        assert data[key].max() <= 1
    for key in ["y_source", "y_target", "y_test"]:
        assert data[key].dtype == np.int64


def _row_counts(X, y):
    rows, counts = np.unique(np.column_stack([X, y]), axis=0, return_counts=True)
    return rows, counts


def test_make_digits_transfer_target_train_and_test_partition_the_target_digits():
    digits = load_digits()
    is_target = digits.target >= 5
    data = make_digits_transfer(n_labels_per_class=20, random_state=1)

    # Each target sample is in exactly one of the two sets: together they are
    # the target digits, as a multiset of (pixels, label) rows.
    expected_rows, expected_counts = _row_counts(
        digits.data[is_target] / 16, digits.target[is_target]
    )
    found_rows, found_counts = _row_counts(
        np.vstack([data.X_target, data.X_test]),
        np.concatenate([data.y_target, data.y_test]),
    )
    np.testing.assert_allclose(found_rows, expected_rows)
    np.testing.assert_array_equal(found_counts, expected_counts)
    assert len(data.y_source) == np.sum(~is_target)


def test_make_digits_transfer_random_state():
    first = make_digits_transfer(5, random_state=42)
    second = make_digits_transfer(5, random_state=np.random.RandomState(42))
    other = make_digits_transfer(5, random_state=43)

    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first.X_target, other.X_target)


def test_make_digits_transfer_images():
    flat = make_digits_transfer(3, random_state=0)
    images = make_digits_transfer(3, random_state=0, images=True)

    for key in ["X_source", "X_target", "X_test"]:
        assert images[key].shape == (len(flat[key]), 1, 8, 8)
        np.testing.assert_array_equal(images[key].reshape(-1, 64), flat[key])


def test_make_digits_transfer_largest_n_labels():
    data = make_digits_transfer(173, random_state=0)

    np.testing.assert_array_equal(np.bincount(data.y_test)[5:].min(), 1)


@pytest.mark.parametrize("n_labels_per_class", [0, -3, 174, 1000])
def test_make_digits_transfer_bad_n_labels_value(n_labels_per_class):
    match = rf"must be in the range \[1, 173\].*got {n_labels_per_class}\."
    with pytest.raises(ValueError, match=match):
        make_digits_transfer(n_labels_per_class)


@pytest.mark.parametrize("n_labels_per_class", [2.5, "10", True, None])
def test_make_digits_transfer_bad_n_labels_type(n_labels_per_class):
    match = r"n_labels_per_class must be an int in the range \[1, 173\]; got"
    with pytest.raises(TypeError, match=match):
        make_digits_transfer(n_labels_per_class)
