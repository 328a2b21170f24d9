"""ArrayLoader: the fast data path gives skorch's batches, and skorch's results."""

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.dataloader import default_collate

from sktransfer import ArrayLoader, TransferClassifier, TransferRegressor


class SkorchPath(DataLoader):
    """skorch's default data path under another name, so the estimators keep it."""


def _batches(loader):
    return [(Xb.clone(), yb.clone()) for Xb, yb in loader]


def _assert_same_batches(expected, got):
    assert len(expected) == len(got)
    for (Xa, ya), (Xb, yb) in zip(expected, got, strict=True):
        assert Xa.dtype == Xb.dtype
        assert ya.dtype == yb.dtype
        assert torch.equal(Xa, Xb)
        assert torch.equal(ya, yb)


@pytest.fixture
def arrays():
    rng = np.random.RandomState(0)
    return rng.rand(53, 2, 3).astype(np.float32), rng.randint(0, 4, 53)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(
    "make", [lambda X, y: Dataset(X, y), lambda X, y: Dataset(X, None)]
)
def test_batches_and_random_numbers_match_dataloader(arrays, shuffle, drop_last, make):
    dataset = make(*arrays)
    torch.manual_seed(3)
    expected = _batches(
        DataLoader(dataset, batch_size=10, shuffle=shuffle, drop_last=drop_last)
    )
    after_expected = torch.rand(3)
    torch.manual_seed(3)
    loader = ArrayLoader(dataset, batch_size=10, shuffle=shuffle, drop_last=drop_last)
    assert loader.fast
    got = _batches(loader)
    assert len(loader) == len(got) == (5 if drop_last else 6)
    _assert_same_batches(expected, got)
    # The same random numbers are left for what follows (dropout, next epoch).
    assert torch.equal(torch.rand(3), after_expected)


def test_each_epoch_draws_a_new_order_reproducibly(arrays):
    loader = ArrayLoader(Dataset(*arrays), batch_size=53, shuffle=True)
    torch.manual_seed(0)
    first, second = _batches(loader)[0][1], _batches(loader)[0][1]
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    assert torch.equal(_batches(loader)[0][1], first)


def test_subset_of_a_validation_split_and_a_generator(arrays):
    dataset = Subset(Dataset(*arrays), np.arange(40, 3, -3))
    expected = _batches(
        DataLoader(
            dataset,
            batch_size=4,
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )
    )
    loader = ArrayLoader(
        dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    assert loader.fast
    _assert_same_batches(expected, _batches(loader))


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_tensor_dataset_and_read_only_arrays(arrays):
    X, y = arrays
    X.setflags(write=False)
    with torch.random.fork_rng():
        _assert_same_batches(
            _batches(DataLoader(Dataset(X, y), batch_size=7)),
            _batches(ArrayLoader(Dataset(X, y), batch_size=7)),
        )
    tensors = TensorDataset(torch.from_numpy(X.copy()), torch.from_numpy(y))
    assert ArrayLoader(tensors, batch_size=7).fast


class Doubled(Dataset):
    def transform(self, X, y):
        return X * 2, y


@pytest.mark.parametrize(
    ("dataset", "kwargs"),
    [
        (lambda X, y: Doubled(X, y), {}),
        (lambda X, y: Dataset(X, y), {"collate_fn": default_collate}),
        (lambda X, y: Dataset({"a": X}, y), {}),
        (lambda X, y: Dataset(X.astype(object), y), {}),
    ],
    ids=["dataset-subclass", "collate_fn", "dict", "object-dtype"],
)
def test_anything_else_goes_through_dataloader(arrays, dataset, kwargs):
    data = dataset(*arrays)
    loader = ArrayLoader(data, batch_size=8, **kwargs)
    assert not loader.fast
    assert len(loader) == 7
    if not isinstance(data.X, dict) and data.X.dtype != object:
        _assert_same_batches(
            _batches(DataLoader(data, batch_size=8, **kwargs)), _batches(loader)
        )


def test_worker_settings_are_accepted_on_the_fast_path(arrays):
    loader = ArrayLoader(Dataset(*arrays), batch_size=8, num_workers=2, timeout=0)
    assert loader.fast


def _state(estimator):
    return estimator.net_.module_.state_dict()


@pytest.mark.parametrize("split", [None, ValidSplit(4, stratified=False)])
def test_estimator_fast_path_gives_skorch_results(digits, split):
    """Same seed, same weights: the fast path changes speed, not results."""
    net = tiny_classifier_net(train_split=split, module__dropout=0.2, max_epochs=4)
    fast = TransferClassifier(net, frozen="features.*", random_state=0)
    fast.fit_source(digits.X_source, digits.y_source)
    slow = clone(fast).set_params(
        net__iterator_train=SkorchPath, net__iterator_valid=SkorchPath
    )
    slow.fit_source(digits.X_source, digits.y_source)
    fast.fit(digits.X_target, digits.y_target)
    slow.fit(digits.X_target, digits.y_target)
    assert fast.net_.iterator_train is ArrayLoader
    assert slow.net_.iterator_train is SkorchPath
    for key, value in _state(fast).items():
        torch.testing.assert_close(value, _state(slow)[key], rtol=0, atol=0)
    assert fast.net_.history[:, "train_loss"] == slow.net_.history[:, "train_loss"]
    if split is not None:
        assert fast.net_.history[:, "valid_loss"] == slow.net_.history[:, "valid_loss"]
    np.testing.assert_array_equal(
        fast.predict_proba(digits.X_test), slow.predict_proba(digits.X_test)
    )


def test_regressor_fast_path_gives_skorch_results():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = X @ rng.normal(size=(4, 2))
    fast = TransferRegressor(tiny_regressor_net(), random_state=0).fit(X, y)
    slow = TransferRegressor(
        tiny_regressor_net(iterator_train=SkorchPath, iterator_valid=SkorchPath),
        random_state=0,
    ).fit(X, y)
    np.testing.assert_array_equal(fast.predict(X), slow.predict(X))


def test_prediction_of_many_rows_is_batched(digits):
    clf = TransferClassifier(tiny_classifier_net(batch_size=64), random_state=0)
    clf.fit(digits.X_target, digits.y_target)
    X = np.tile(digits.X_test, (3, 1))
    calls = []
    handle = clf.net_.module_.register_forward_hook(
        lambda module, args, out: calls.append(len(args[0]))
    )
    try:
        proba = clf.predict_proba(X)
    finally:
        handle.remove()
    assert proba.shape == (len(X), 5)
    assert max(calls) == 64
    assert sum(calls) == len(X)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        direct = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(proba, direct, rtol=1e-5, atol=1e-6)
