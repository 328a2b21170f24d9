"""The default network is tunable: its settings as parameters, its template public."""

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import EarlyStopping

from sktransfer import MLP, TransferClassifier, TransferRegressor, default_net

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_default_net_is_the_template_of_net_none():
    net = default_net()
    assert type(net) is NeuralNetClassifier
    assert net.module is MLP
    assert net.criterion is torch.nn.CrossEntropyLoss
    assert net.optimizer is torch.optim.Adam
    assert (net.lr, net.max_epochs, net.batch_size, net.train_split) == (
        1e-3,
        200,
        200,
        None,
    )
    assert net.get_params()["iterator_train__shuffle"] is True
    ((name, stopper),) = net.callbacks
    assert name == "early_stopping"
    assert isinstance(stopper, EarlyStopping)
    assert (stopper.monitor, stopper.patience, stopper.threshold) == (
        "train_loss",
        10,
        1e-4,
    )
    reg = default_net("regressor", lr=0.5)
    assert type(reg) is NeuralNetRegressor
    assert reg.criterion is torch.nn.MSELoss
    assert reg.lr == 0.5


def test_default_net_refuses_an_unknown_estimator():
    with pytest.raises(ValueError, match="estimator='svm'; expected 'classifier'"):
        default_net("svm")


def test_default_template_trains_as_net_none(digits):
    X, y = digits.X_target, digits.y_target
    plain = TransferClassifier(max_epochs=5, random_state=0).fit(X, y)
    templated = TransferClassifier(default_net(max_epochs=5), random_state=0).fit(X, y)
    np.testing.assert_array_equal(plain.predict_proba(X), templated.predict_proba(X))


def test_estimator_parameters_reach_the_net_in_both_phases(digits):
    clf = TransferClassifier(
        hidden_layer_sizes=(7, 5), lr=0.02, max_epochs=2, batch_size=16, random_state=0
    )
    clf.fit_source(digits.X_source, digits.y_source)
    assert len(clf.source_history_) == 2
    assert clf.source_weights_["features.1.weight"].shape == (7, 64)
    assert clf.source_weights_["features.3.weight"].shape == (5, 7)
    clf.fit(digits.X_target, digits.y_target)
    assert clf.net_.lr == 0.02
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.02
    assert clf.net_.batch_size == 16
    # 50 samples in batches of 16: four batches per epoch, two epochs.
    assert [len(row["batches"]) for row in clf.net_.history] == [4, 4]


def test_estimator_parameters_override_a_template_and_source_params_win(digits):
    template = tiny_classifier_net(lr=0.5, max_epochs=1)
    clf = TransferClassifier(
        template, lr=0.03, max_epochs=2, source_params={"max_epochs": 3}
    )
    clf.fit_source(digits.X_source, digits.y_source)
    clf.fit(digits.X_target, digits.y_target)
    assert len(clf.source_history_) == 3
    assert len(clf.net_.history) == 2
    assert clf.net_.lr == 0.03
    assert template.lr == 0.5  # the template is not changed


def test_grid_search_over_the_default_networks_learning_rate(digits):
    search = GridSearchCV(
        TransferClassifier(max_epochs=2, hidden_layer_sizes=(8,), random_state=0),
        {"lr": [1e-3, 1e-2], "hidden_layer_sizes": [(8,), (4, 4)]},
        cv=2,
    ).fit(digits.X_target, digits.y_target)
    assert len(search.cv_results_["params"]) == 4
    best = search.best_estimator_
    assert best.net_.lr == search.best_params_["lr"]
    widths = [
        m.out_features for m in best.net_.module_.features if hasattr(m, "out_features")
    ]
    assert tuple(widths) == search.best_params_["hidden_layer_sizes"]


def test_parameters_round_trip_through_clone():
    clf = TransferRegressor(hidden_layer_sizes=[3], lr=0.1, max_epochs=4, batch_size=8)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params()


def test_nested_key_on_the_default_net_names_the_parameter():
    with pytest.raises(
        ValueError, match=r"net__lr: net is None.*set lr=\.\.\. instead"
    ):
        TransferClassifier().set_params(net__lr=1e-2)
    with pytest.raises(ValueError, match=r"default_net\('regressor'\)"):
        TransferRegressor().set_params(net__optimizer=torch.optim.SGD)


def test_hidden_layer_sizes_needs_a_module_that_takes_it(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    clf = TransferClassifier(ConvNet, hidden_layer_sizes=(8,), max_epochs=1)
    with pytest.raises(ValueError, match="network is ConvNet, whose constructor takes"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")
    with pytest.raises(ValueError, match=r"tuple of ints >= 1.*got \(0,\)"):
        TransferClassifier(hidden_layer_sizes=(0,)).fit(X.reshape(len(X), -1), y)
