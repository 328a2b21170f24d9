"""TransferRegressor: 1-D and 2-D targets, heads resized to the number of targets."""

import numpy as np
import pytest
import torch
from nets import tiny_regressor_net
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch import NeuralNetClassifier

from sktransfer import MLP, TransferRegressor


@pytest.fixture(scope="module")
def regression():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    W = rng.normal(size=(6, 3))
    Y = np.tanh(X @ W)
    return X, Y


def test_one_dimensional_target_gives_one_dimensional_predictions(regression):
    X, Y = regression
    reg = TransferRegressor(tiny_regressor_net(max_epochs=30), random_state=0)
    reg.fit(X, Y[:, 0])
    pred = reg.predict(X)
    assert pred.shape == (300,)
    assert pred.dtype == np.float64
    assert reg.n_outputs_ == 1
    assert reg.score(X, Y[:, 0]) > 0.5


def test_source_and_target_may_have_different_numbers_of_targets(regression):
    X, Y = regression
    reg = TransferRegressor(tiny_regressor_net(), frozen="features.*", random_state=0)
    reg.fit_source(X, Y)  # 3 targets
    assert reg.source_weights_["head.weight"].shape == (3, 16)
    reg.fit(X[:50], Y[:50, :2])  # 2 targets
    # The predictions by hand: the new 2-output head over the transferred layer.
    state = {k: v.double().numpy() for k, v in reg.net_.module_.state_dict().items()}
    hidden = np.maximum(X @ state["features.1.weight"].T + state["features.1.bias"], 0)
    scaled = hidden @ state["head.weight"].T + state["head.bias"]
    # normalize_y=True: the network predicts standardised targets.
    expected = Y[:50, :2].mean(axis=0) + Y[:50, :2].std(axis=0) * scaled
    np.testing.assert_allclose(reg.predict(X), expected, rtol=1e-5, atol=1e-6)
    assert reg.net_.module_.head.out_features == 2
    assert torch.equal(
        reg.net_.module_.features[1].weight, reg.source_weights_["features.1.weight"]
    )


def test_pretrained_regressor_survives_clone(regression):
    X, Y = regression
    reg = TransferRegressor(tiny_regressor_net(), random_state=0).fit_source(X, Y)
    twin = clone(reg)
    assert twin.source_weights_ is reg.source_weights_
    with pytest.raises(NotFittedError):
        twin.predict(X)
    np.testing.assert_array_equal(
        twin.fit(X, Y[:, 0]).predict(X), reg.fit(X, Y[:, 0]).predict(X)
    )


def test_regressor_needs_a_regressor_net(regression):
    X, Y = regression
    with pytest.raises(TypeError, match="needs net to be a skorch NeuralNetRegressor"):
        TransferRegressor(NeuralNetClassifier(MLP)).fit(X, Y)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        ([np.nan] * 300, "NaN"),
        (np.full(300, np.inf), "infinity"),
        (np.array(["a"] * 300, dtype=object), "could not convert"),
    ],
)
def test_bad_targets_are_clear_errors(regression, y, match):
    X, _ = regression
    reg = TransferRegressor(tiny_regressor_net())
    with pytest.raises(ValueError, match=match):
        reg.fit(X, y)
    assert not hasattr(reg, "n_features_in_")
