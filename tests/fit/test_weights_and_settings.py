"""Weights that are weights, target scaling where valid, one value per setting.

Each test checks a case of issue 18 (3, 4, 5, 6 and 10) or a variant of its
kind against an independent value: a hand-computed weighted mean or loss, plain
skorch on the same module and seed, the rate the optimizer really holds.
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net, tiny_regressor_net
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from sktransfer import MLP, TransferClassifier, TransferRegressor
from sktransfer._estimators import _targets
from sktransfer._skorch import _weights
from sktransfer._skorch._data import WeightedTarget


@pytest.fixture(scope="module")
def regression():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = X @ [1.0, 2.0, -1.0] + 0.1 * rng.normal(size=120)
    return X, y


@pytest.fixture(scope="module")
def classification():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0.8).astype(np.int64)
    return X, y


def _quiet(fit, *args, **kwargs):
    """Call ``fit`` with the ConvergenceWarning of short fits silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(*args, **kwargs)


def _warnings_of(fit, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(*args, **kwargs)
    return [(w.category, str(w.message)) for w in caught]


# --------------------------------------------- case 3: normalize_y sees weights


def test_a_zero_weighted_target_changes_no_prediction(regression):
    # Case 3: weight 0 masks a sentinel target; its value must not matter.
    X, y = regression
    w = np.ones(len(y))
    w[0] = 0.0
    sentinel = y.copy()
    sentinel[0] = 1e4

    def fit(targets):
        reg = TransferRegressor(tiny_regressor_net(), random_state=0)
        return _quiet(reg.fit, X, targets, sample_weight=w)

    masked, moved = fit(y), fit(sentinel)
    np.testing.assert_array_equal(masked.predict(X), moved.predict(X))
    mean = np.sum(w * y) / np.sum(w)
    np.testing.assert_allclose(masked._y_mean, [mean], rtol=1e-12)
    scale = np.sqrt(np.sum(w * (y - mean) ** 2) / np.sum(w))
    np.testing.assert_allclose(masked._y_scale, [scale], rtol=1e-12)


def test_importance_weights_of_the_source_set_its_scaling(regression):
    # Case 3, fit_source: importance weights go through the same statistics.
    X, y = regression
    w = np.random.RandomState(1).uniform(0, 2, len(y))
    w[:5] = 0.0
    sentinel = y.copy()
    sentinel[:5] = -1e4

    def pretrain(targets):
        reg = TransferRegressor(tiny_regressor_net(), random_state=0)
        return _quiet(reg.fit_source, X, targets, sample_weight=w).source_weights_

    masked, moved = pretrain(y), pretrain(sentinel)
    for name, weight in masked.items():
        assert torch.equal(moved[name], weight), name


def test_each_output_of_a_2d_target_is_scaled_by_its_weighted_statistics(
    regression,
):
    # Variant: the per-output scaling of a 2-D y, against np.average.
    X, y = regression
    Y = np.column_stack([y, 100 + 30 * y**2])
    # float32 weights: the precision the weights are kept in.
    w = np.random.RandomState(2).uniform(0, 3, len(y)).astype(np.float32)
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    _quiet(reg.fit, X, Y, sample_weight=w)
    mean = np.average(Y, axis=0, weights=w)
    np.testing.assert_allclose(reg._y_mean, mean, rtol=1e-12)
    std = np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(reg._y_scale, std, rtol=1e-12)


# ------------------------------- case 4: class-weighted criteria, equal weights


def _class_weighted_net(**params):
    return tiny_classifier_net(
        max_epochs=5, criterion__weight=torch.tensor([1.0, 6.0]), **params
    )


def test_uniform_weights_leave_a_class_weighted_fit_bit_identical(classification):
    # Case 4: sample_weight=np.ones(n) is no weighting, for any criterion.
    X, y = classification

    def proba(sample_weight):
        clf = TransferClassifier(_class_weighted_net(), random_state=0)
        return _quiet(clf.fit, X, y, sample_weight=sample_weight).predict_proba(X)

    unweighted = proba(None)
    np.testing.assert_array_equal(proba(np.ones(len(y))), unweighted)
    np.testing.assert_array_equal(proba(np.full(len(y), 3.0)), unweighted)


def test_uniform_weights_train_as_plain_skorch_with_class_weights(classification):
    X, y = classification
    torch.manual_seed(0)
    module = MLP(n_features_in=4, n_outputs=2, hidden_layer_sizes=(8,))
    params = {
        "criterion": nn.CrossEntropyLoss,
        "criterion__weight": torch.tensor([1.0, 6.0]),
        "lr": 0.05,
        "max_epochs": 5,
        "batch_size": 32,
        "train_split": None,
        "verbose": 0,
    }
    plain = NeuralNetClassifier(copy.deepcopy(module), **params).fit(X, y)
    clf = TransferClassifier(
        NeuralNetClassifier(copy.deepcopy(module), **params), head=None
    )
    clf.fit(X, y, sample_weight=np.ones(len(y)))
    trained = dict(plain.module_.named_parameters())
    for name, param in clf.net_.module_.named_parameters():
        assert torch.equal(param, trained[name]), name


def test_the_weighted_loss_divides_by_the_weighted_class_weights():
    # sum(w * cw[y] * ce) / sum(w * cw[y]), as torch's class-weighted mean.
    net = NeuralNetClassifier(
        nn.Linear,
        module__in_features=2,
        module__out_features=3,
        criterion=nn.CrossEntropyLoss,
        criterion__weight=torch.tensor([1.0, 6.0, 0.5]),
        criterion__ignore_index=-1,
    ).initialize()
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, -1, 0])
    w = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0, 1.5])
    cw = torch.tensor([1.0, 6.0, 0.5])
    kept = y >= 0
    ce = -torch.log_softmax(logits, dim=1)[torch.arange(6), y.clamp_min(0)]
    expected = (w * cw[y.clamp_min(0)] * ce * kept).sum() / (
        w * cw[y.clamp_min(0)] * kept
    ).sum()
    loss = _weights.WeightedLoss(net)(logits, WeightedTarget(y, w), training=True)
    torch.testing.assert_close(loss, expected)
    # Equal weights: torch's own class-weighted reduction, bit for bit.
    equal = _weights.WeightedLoss(net)(
        logits, WeightedTarget(y, torch.full((6,), 2.0)), training=True
    )
    assert torch.equal(equal, net.criterion_(logits, y))


# ---------------------------------------- case 5: target scaling where valid


def _plain_and_transfer(module, X, y, criterion, **estimator_params):
    """Fit plain skorch and a TransferRegressor on copies of ``module``."""
    params = {
        "criterion": criterion,
        "lr": 0.01,
        "max_epochs": 40,
        "batch_size": 32,
        "train_split": None,
        "verbose": 0,
    }
    plain = NeuralNetRegressor(copy.deepcopy(module), **params)
    plain.fit(X, y.astype(np.float32).reshape(len(y), -1))
    reg = TransferRegressor(
        NeuralNetRegressor(copy.deepcopy(module), **params),
        head=None,
        random_state=0,
        **estimator_params,
    )
    return plain, _quiet(reg.fit, X, y)


def test_a_softplus_output_trains_on_its_targets_as_plain_skorch(regression):
    # Case 5: the default normalize_y scaled the targets of a Softplus output.
    X, _ = regression
    y = np.exp(0.5 * X[:, 0]) + 0.05 * np.random.RandomState(0).normal(size=len(X))
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1), nn.Softplus())
    plain, reg = _plain_and_transfer(module, X, y, nn.MSELoss)
    expected = plain.predict(X).ravel().astype(np.float64)
    np.testing.assert_array_equal(reg.predict(X), expected)
    assert r2_score(y, reg.predict(X)) == r2_score(y, expected)
    with pytest.raises(ValueError, match="output ends in Softplus"):
        TransferRegressor(copy.deepcopy(module), normalize_y=True).fit(X, y)


def test_poisson_counts_train_as_plain_skorch(regression):
    X, _ = regression
    y = np.random.RandomState(0).poisson(np.exp(0.5 * X[:, 0])).astype(np.float64)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    plain, reg = _plain_and_transfer(module, X, y, nn.PoissonNLLLoss)
    np.testing.assert_array_equal(reg.predict(X), plain.predict(X).ravel())
    assert np.exp(reg.predict(X)).max() < 50  # log-rates of counts up to 9
    with pytest.raises(ValueError, match="criterion is PoissonNLLLoss"):
        TransferRegressor(
            NeuralNetRegressor(module, criterion=nn.PoissonNLLLoss),
            normalize_y=True,
        ).fit(X, y)


def test_a_sigmoid_output_with_bce_fits_targets_in_0_1(regression):
    X, _ = regression
    y = 1 / (1 + np.exp(-X[:, 0]))
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())
    plain, reg = _plain_and_transfer(module, X, y, nn.BCELoss)
    np.testing.assert_array_equal(reg.predict(X), plain.predict(X).ravel())
    assert reg._y_mean == 0.0
    assert reg._y_scale == 1.0


class _ExpOutput(nn.Module):
    """A network whose output is ``torch.exp`` of a linear layer, plus a constant."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(3, 1)

    def forward(self, X):
        return torch.exp(self.out(X)) + 1e-6


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 1), nn.Linear(3, 1)

    def forward(self, X):
        return torch.relu(self.a(X)) + self.b(X)


@pytest.mark.parametrize(
    ("module", "bound"),
    [
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)), None),
        (nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), None),
        (_Residual(), None),
        (nn.Sequential(nn.Linear(3, 1), nn.ReLU()), "Relu"),
        (nn.Sequential(nn.Linear(3, 1), nn.Tanh(), nn.Flatten(1)), "Tanh"),
        (_ExpOutput(), "Exp"),
    ],
)
def test_the_bound_is_read_from_the_network_on_its_rows(module, bound):
    rows = np.random.RandomState(0).normal(size=(8, 3)).astype(np.float32)
    assert _targets.bounding_operation(module, rows) == bound


class _Squared(nn.Module):
    """An output made non-negative by squaring (a predicted variance, say)."""

    def __init__(self, power=2):
        super().__init__()
        self.out, self.power = nn.Linear(3, 1), power

    def forward(self, X):
        return self.out(X) ** self.power


class _FloorAtZero(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(3, 1)

    def forward(self, X):
        return torch.maximum(self.out(X), torch.zeros(()))


@pytest.mark.parametrize(
    ("module", "bound"),
    [
        (_Squared(2), "Pow"),
        (_Squared(3), None),  # an odd power is not bounded
        (_FloorAtZero(), "Maximum"),
    ],
)
def test_bounds_set_by_a_constant_of_the_operation_are_read(module, bound):
    rows = np.random.RandomState(0).normal(size=(8, 3)).astype(np.float32)
    assert _targets.bounding_operation(module, rows) == bound


def test_a_squared_output_trains_on_its_targets_as_plain_skorch(regression):
    # Variant of case 5: x ** 2 never goes below 0, so centring the targets
    # would leave it unable to predict below their mean.
    X, _ = regression
    y = X[:, 0] ** 2
    torch.manual_seed(0)
    module = _Squared(2)
    plain, reg = _plain_and_transfer(module, X, y, nn.MSELoss)
    np.testing.assert_array_equal(reg.predict(X), plain.predict(X).ravel())
    assert reg._y_mean == 0.0


def test_a_relu_or_exp_output_is_not_scaled_and_refused_when_asked(regression):
    # Variant: other bounded outputs (a final nn.ReLU, a functional torch.exp).
    X, y = regression
    y = y - y.min() + 1
    for module, name in [
        (nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1), nn.ReLU()), "Relu"),
        (_ExpOutput(), "Exp"),
    ]:
        reg = _quiet(TransferRegressor(module, head=None, max_epochs=2).fit, X, y)
        assert reg._y_mean == 0.0
        assert reg._y_scale == 1.0
        with pytest.raises(ValueError, match=f"output ends in {name}"):
            TransferRegressor(module, normalize_y=True, head=None).fit(X, y)


def test_mse_on_a_linear_output_is_scaled_and_never_refused(regression):
    X, y = regression
    for normalize_y in ("auto", True):
        reg = TransferRegressor(
            tiny_regressor_net(), normalize_y=normalize_y, random_state=0
        )
        _quiet(reg.fit, X, 100 + 50 * y)
        np.testing.assert_allclose(reg._y_mean, [np.mean(100 + 50 * y)])


# --------------------------------------------- case 6: one setting, one value


def test_the_estimators_lr_beats_a_templates_optimizer_lr(classification):
    X, y = classification
    net = tiny_classifier_net(optimizer__lr=0.5)
    clf = TransferClassifier(net, lr=0.01, shared_lr_scale=0.1, random_state=0)
    caught = _warnings_of(clf.fit, X, y)
    assert any("optimizer__lr=0.5" in msg and "lr=0.01" in msg for _, msg in caught), (
        caught
    )
    # The head at lr, the shared layers at lr * shared_lr_scale.
    rates = [group["lr"] for group in clf.net_.optimizer_.param_groups]
    assert rates == [0.01, pytest.approx(0.001)]


def test_a_search_over_lr_trains_each_candidate_at_its_rate(classification):
    X, y = classification
    search = GridSearchCV(
        TransferClassifier(tiny_classifier_net(optimizer__lr=0.5), random_state=0),
        {"lr": [1e-4, 1e-2, 0.3]},
        scoring=lambda est, X, y: est.net_.optimizer_.param_groups[0]["lr"],
        cv=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [1e-4, 1e-2, 0.3])


def test_source_params_lr_beats_the_templates_optimizer_lr(classification):
    X, y = classification
    weights = []
    for template in (tiny_classifier_net(optimizer__lr=0.5), tiny_classifier_net()):
        clf = TransferClassifier(
            template, source_params={"lr": 0.02}, lr=0.3, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weights.append(clf.fit_source(X, y).source_weights_)
    for name, weight in weights[1].items():
        assert torch.equal(weights[0][name], weight), name


def test_the_estimators_batch_size_beats_the_iterators(classification):
    # Variant: batch_size and iterator_train__batch_size name one setting.
    X, y = classification
    net = tiny_classifier_net(
        iterator_train__batch_size=64, iterator_train__shuffle=False
    )
    clf = TransferClassifier(net, batch_size=16, max_epochs=1, random_state=0)
    caught = _warnings_of(clf.fit, X, y)
    assert any("iterator_train__batch_size=64" in msg for _, msg in caught), caught
    sizes = [b["train_batch_size"] for b in clf.net_.history[-1]["batches"]]
    assert sizes == [16] * 7 + [8]


def test_a_template_with_two_learning_rates_is_told_which_trains(classification):
    X, y = classification
    clf = TransferClassifier(tiny_classifier_net(lr=0.05, optimizer__lr=0.2))
    caught = _warnings_of(clf.fit, X, y)
    assert any("lr=0.05" in msg and "optimizer__lr=0.2" in msg for _, msg in caught), (
        caught
    )
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.2


# ------------------------------------- case 10: settings that cannot act, divergence


@pytest.mark.parametrize(
    ("setting", "value"),
    [("l2sp", 1.0), ("shared_lr_scale", 0.1), ("layer_decay", 0.5)],
)
def test_a_fine_tuning_setting_on_frozen_shared_layers_is_said(
    classification, setting, value
):
    X, y = classification
    source = TransferClassifier(tiny_classifier_net(), random_state=0)
    _quiet(source.fit_source, X, y)
    frozen = source.set_params(frozen="features.*")
    plain = _quiet(frozen.fit, X, y).predict_proba(X)
    clf = frozen.set_params(**{setting: value})
    caught = _warnings_of(clf.fit, X, y)
    said = [msg for _, msg in caught if f"{setting}={value}" in msg]
    assert said, caught
    assert "every one is frozen" in said[0]
    # ... and what it says is true: the fit is the frozen one.
    np.testing.assert_array_equal(clf.predict_proba(X), plain)


def test_a_finite_loss_that_explodes_warns_as_divergence(classification):
    # Case 10: lr=1e6, loss 0.7 -> 1e11, no warning before.
    X, y = classification
    clf = TransferClassifier(lr=1e6, max_epochs=10, random_state=0)
    caught = _warnings_of(clf.fit, X, y)
    diverged = [msg for cat, msg in caught if issubclass(cat, ConvergenceWarning)]
    assert any("diverged" in msg for msg in diverged), caught
    losses = clf.net_.history[:, "train_loss"]
    assert losses[-1] > 100 * losses[0]


def test_a_diverging_regressor_warns_too(regression):
    X, y = regression
    reg = TransferRegressor(lr=1e6, max_epochs=10, random_state=0)
    caught = _warnings_of(reg.fit, X, y)
    assert any(
        issubclass(cat, ConvergenceWarning) and "diverged" in msg for cat, msg in caught
    ), caught


@pytest.mark.parametrize("max_epochs", [2, 4])
def test_healthy_short_noisy_fits_do_not_warn_of_divergence(classification, max_epochs):
    X, y = classification
    clf = TransferClassifier(
        tiny_classifier_net(batch_size=4, lr=0.05), max_epochs=max_epochs
    )
    caught = _warnings_of(clf.fit, X, y)
    assert not [msg for _, msg in caught if "diverged" in msg]


def test_n_iter_no_change_with_a_templates_own_callbacks_is_said(classification):
    # Variant: the estimator's patience does not reach a template's callbacks.
    X, y = classification
    clf = TransferClassifier(tiny_classifier_net(), n_iter_no_change=3)
    caught = _warnings_of(clf.fit, X, y)
    assert any("n_iter_no_change=3" in msg for _, msg in caught), caught
    # With early_stopping=True it is the patience used: no warning.
    clf.set_params(early_stopping=True)
    caught = _warnings_of(clf.fit, X, y)
    assert not [msg for _, msg in caught if "n_iter_no_change" in msg]
