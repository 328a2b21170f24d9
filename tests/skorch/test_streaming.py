"""Source data bigger than memory: memmap arrays and torch Datasets in fit_source."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from nets import equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from torch.utils.data import Dataset, TensorDataset

from sktransfer import TransferClassifier, TransferRegressor


def _memmap(path, X, dtype):
    disk = np.memmap(path, dtype=dtype, mode="w+", shape=X.shape)
    disk[:] = X
    disk.flush()
    return np.memmap(path, dtype=dtype, mode="r", shape=X.shape)


@pytest.fixture(scope="module")
def in_memory(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_memmap_pretraining_equals_in_memory_pretraining(
    digits, in_memory, tmp_path, dtype
):
    # Digits scaled to 0-16 are exact in uint8: the same samples on disk.
    X = digits.X_source * 16 if dtype == np.uint8 else digits.X_source
    disk = _memmap(tmp_path / "X.dat", X, dtype)
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit_source(disk, digits.y_source)
    if dtype == np.uint8:
        reference = TransferClassifier(tiny_classifier_net(), random_state=0)
        reference.fit_source(np.asarray(X, np.float32), digits.y_source)
    else:
        reference = in_memory
    assert equal_weights(clf.source_weights_, reference.source_weights_)
    assert clf._pretrained.sample_shape == (64,)
    # Fine-tuning takes in-memory arrays as before, from the same weights: the
    # same fit as from the in-memory pretraining (the former check, a score
    # above 0.5, held for one seed in 16 of three epochs on 50 labels).
    clf.fit(digits.X_target, digits.y_target)
    expected = clone(reference).fit(digits.X_target, digits.y_target)
    np.testing.assert_array_equal(
        clf.predict_proba(digits.X_test), expected.predict_proba(digits.X_test)
    )


def test_memmap_with_a_validation_split(digits, tmp_path):
    from skorch.dataset import ValidSplit

    disk = _memmap(tmp_path / "X.dat", digits.X_source, np.float32)
    net = tiny_classifier_net(train_split=ValidSplit(5, stratified=True))
    clf = TransferClassifier(net, random_state=0).fit_source(disk, digits.y_source)
    assert "valid_loss" in clf.source_history_[-1]


def test_memmap_problems_are_named(digits, tmp_path):
    bad = digits.X_source.copy()
    bad[500, 3] = np.nan
    disk = _memmap(tmp_path / "nan.dat", bad, np.float32)
    clf = TransferClassifier(tiny_classifier_net())
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        clf.fit_source(disk, digits.y_source)
    good = _memmap(tmp_path / "X.dat", digits.X_source, np.float32)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit_source(good, digits.y_source[:-1])
    flat = _memmap(tmp_path / "flat.dat", digits.X_source[:, 0], np.float32)
    with pytest.raises(ValueError, match="must be \\(n_samples, n_features\\)"):
        clf.fit_source(flat, digits.y_source)
    assert not hasattr(clf, "_pretrained")


class _Digits(Dataset):
    """A map-style dataset reading one sample at a time, as from disk."""

    def __init__(self, X, y, targets=True):
        self.X, self.y = X, y
        if targets:
            self.targets = list(y)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.from_numpy(self.X[i]), int(self.y[i])


@pytest.mark.parametrize("targets", [True, False])
def test_dataset_pretraining_equals_in_memory_pretraining(digits, in_memory, targets):
    data = _Digits(digits.X_source, digits.y_source, targets=targets)
    clf = TransferClassifier(tiny_classifier_net(), random_state=0).fit_source(data)
    assert equal_weights(clf.source_weights_, in_memory.source_weights_)
    np.testing.assert_array_equal(clf.source_classes_, [0, 1, 2, 3, 4])


def test_dataset_for_a_regressor(digits):
    X = torch.from_numpy(digits.X_source)
    y = torch.from_numpy(digits.y_source.astype(np.float32)).reshape(-1, 1)
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit_source(TensorDataset(X, y))
    assert reg._pretrained.n_outputs == 1


def test_dataset_problems_are_named(digits):
    data = _Digits(digits.X_source, digits.y_source + 5)
    clf = TransferClassifier(tiny_classifier_net())
    with pytest.raises(ValueError, match="class indices 0 to n_classes - 1"):
        clf.fit_source(data)
    with pytest.raises(ValueError, match="pass y=None"):
        clf.fit_source(data, digits.y_source)
    assert not hasattr(clf, "_pretrained")


_BOUNDED = textwrap.dedent(
    """
    import resource, sys
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    from nets import tiny_classifier_net
    from sktransfer import TransferClassifier

    torch.set_num_threads(1)
    n, d = {n}, {d}
    X = np.memmap({path!r}, dtype=np.float32, mode="r", shape=(n, d))
    y = np.arange(n) % 3
    net = tiny_classifier_net(max_epochs=1, batch_size=256)
    clf = TransferClassifier(net, random_state=0)
    clf.fit_source(np.zeros((9, d), np.float32), np.arange(9) % 3)  # warm up

    def data_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024

    # From here on, private memory (heap, anonymous mappings: everything but the
    # file's own pages) may grow by {budget} bytes at most; a copy of X fails.
    limit = data_bytes() + {budget}
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
    {action}
    print("grew", data_bytes() + {budget} - limit, "bytes")
    """
)


_N, _D = 20_000, 1_600  # 128 MB of float32


def _write_big(path):
    disk = np.memmap(path, dtype=np.float32, mode="w+", shape=(_N, _D))
    rng = np.random.default_rng(0)
    for start in range(0, _N, 2_000):
        disk[start : start + 2_000] = rng.random((2_000, _D), dtype=np.float32)
    disk.flush()


def _run_bounded(path, action):
    n, d = _N, _D
    script = _BOUNDED.format(
        tests=str(Path(__file__).parents[1]),
        n=n,
        d=d,
        path=str(path),
        budget=32 * 2**20,  # a quarter of the file
        action=action,
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA and /proc: Linux")
def test_memmap_pretraining_stays_in_bounded_memory(tmp_path):
    path = tmp_path / "big.dat"
    _write_big(path)
    done = _run_bounded(path, "clf.fit_source(X, y)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("grew")
    # The same limit stops a pretraining that reads X into memory first, so
    # the limit is tight enough to catch a copy.
    copied = _run_bounded(path, "clf.fit_source(np.array(X), y)")
    assert copied.returncode != 0
    assert "MemoryError" in copied.stderr or "Unable to allocate" in copied.stderr
