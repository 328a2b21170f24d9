"""normalize_y: regression targets on any scale."""

import inspect

import numpy as np
import pytest
import torch
from nets import tiny_regressor_net
from sklearn.datasets import load_diabetes
from torch.utils.data import TensorDataset

from sktransfer import TransferRegressor
from sktransfer._estimators._base import _BaseTransfer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def large_targets():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    Y = 150 + 60 * np.tanh(X @ rng.normal(size=(5, 2))) + [0.0, 1000.0]
    return X, Y


def test_normalize_y_equals_training_on_standardised_targets(large_targets):
    X, Y = large_targets
    mean, std = Y.mean(axis=0), Y.std(axis=0)
    scaled = TransferRegressor(tiny_regressor_net(), random_state=0).fit(X, Y)
    by_hand = TransferRegressor(
        tiny_regressor_net(), normalize_y=False, random_state=0
    ).fit(X, (Y - mean) / std)
    np.testing.assert_array_equal(scaled.predict(X), by_hand.predict(X) * std + mean)
    np.testing.assert_allclose(scaled._y_mean, mean)


def test_diabetes_reaches_a_linear_models_r2_only_with_normalize_y():
    X, y = load_diabetes(return_X_y=True)
    train, test = slice(0, 330), slice(330, None)
    params = {"hidden_layer_sizes": (16,), "lr": 1e-2, "max_epochs": 60}
    reg = TransferRegressor(random_state=0, **params).fit(X[train], y[train])
    raw = TransferRegressor(normalize_y=False, random_state=0, **params)
    raw.fit(X[train], y[train])
    # Ridge() scores 0.43 on this split; the full example is examples/diabetes.py.
    assert reg.score(X[test], y[test]) > 0.35
    assert raw.score(X[test], y[test]) < 0


def test_each_task_is_standardised_with_its_own_statistics(large_targets):
    X, Y = large_targets
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit_source(X, 1000 * Y[:, :1])
    reg.fit(X, Y[:, 1])
    np.testing.assert_allclose(reg._y_mean, [Y[:, 1].mean()])
    np.testing.assert_allclose(reg._y_scale, [Y[:, 1].std()])


def test_a_dataset_source_is_standardised_as_arrays_are(large_targets):
    X, Y = large_targets
    arrays = TransferRegressor(tiny_regressor_net(), random_state=0)
    arrays.fit_source(X, Y)
    dataset = TransferRegressor(tiny_regressor_net(), random_state=0)
    dataset.fit_source(TensorDataset(torch.tensor(X), torch.tensor(Y).float()))
    for name, weight in arrays.source_weights_.items():
        torch.testing.assert_close(dataset.source_weights_[name], weight)


def test_partial_fit_keeps_the_scaling_of_its_first_call(large_targets):
    X, Y = large_targets
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.partial_fit(X[:60], Y[:60, 0])
    first = reg._y_mean.copy(), reg._y_scale.copy()
    reg.partial_fit(X[60:], Y[60:, 0] + 500)
    np.testing.assert_array_equal(reg._y_mean, first[0])
    np.testing.assert_array_equal(reg._y_scale, first[1])
    reg.fit(X, Y[:, 0] + 500)  # a new fit computes its own
    np.testing.assert_allclose(reg._y_mean, [Y[:, 0].mean() + 500])


def test_constant_target_is_not_divided_by_zero(large_targets):
    X, _ = large_targets
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    pred = reg.fit(X, np.full(len(X), 7.0)).predict(X)
    assert np.all(np.isfinite(pred))
    np.testing.assert_array_equal(reg._y_scale, [1.0])


def test_regressor_takes_every_base_parameter_and_normalize_y():
    base = set(inspect.signature(_BaseTransfer.__init__).parameters)
    regressor = set(inspect.signature(TransferRegressor.__init__).parameters)
    assert regressor == base | {"normalize_y"}
