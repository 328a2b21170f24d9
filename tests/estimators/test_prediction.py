"""Prediction never changes the fitted estimator, so threads may share one.

``predict``, ``predict_proba``, ``decision_function``, ``transform`` and
``score`` write no attribute of the estimator or its net, swap no module, and
leave every weight, buffer, mode and hook as ``fit`` left them. A threaded
server predicting with one fitted estimator then gets the serial answers bit
for bit.
"""

import copy
import threading
import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.exceptions import ConvergenceWarning
from skorch import NeuralNetClassifier

from sktransfer import MLP, TransferClassifier
from sktransfer._skorch import _predict


class Noise:
    """A random batch augmentation: Gaussian noise drawn from torch's stream."""

    def __call__(self, X):
        return X + 0.1 * torch.randn_like(X)


def _fitted(digit_images, **params):
    net = tiny_classifier_net(ConvNet, max_epochs=3)
    clf = TransferClassifier(net, frozen="features.*", random_state=0, **params)
    clf.fit_source(digit_images.X_source[:200], digit_images.y_source[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(digit_images.X_target, digit_images.y_target)


@pytest.fixture(scope="module")
def fitted(digit_images):
    """A cached frozen stage with test-time views, and an early-stopped one."""
    views = _fitted(digit_images, augment=Noise(), cache_views=2, tta_views=3)
    early = _fitted(digit_images, early_stopping=True, validation_fraction=0.2)
    assert views.frozen_cache_["cached"], views.frozen_cache_
    assert early.frozen_cache_["cached"], early.frozen_cache_
    return {"tta": views, "early": early}


METHODS = ("predict", "predict_proba", "decision_function", "transform")


@pytest.mark.parametrize("kind", ["tta", "early"])
def test_sixteen_threads_get_the_serial_answers(fitted, digit_images, kind):
    clf = fitted[kind]
    X = digit_images.X_target
    serial = {m: getattr(clf, m)(X) for m in METHODS}
    got, errors = [], []
    start = threading.Barrier(16)

    def work():
        try:
            start.wait()
            for _ in range(5):
                got.append({m: getattr(clf, m)(X) for m in METHODS})
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(got) == 80
    for answers in got:
        for m in METHODS:
            np.testing.assert_array_equal(answers[m], serial[m], err_msg=m)


def _snapshot(clf):
    module = clf.net_.module_
    return {
        "estimator": dict(vars(clf)),
        "frozen_cache_": copy.deepcopy(clf.frozen_cache_),
        "net": dict(vars(clf.net_)),
        "module": module,
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "modes": [(name, sub.training) for name, sub in module.named_modules()],
        "hooks": [
            (name, len(sub._forward_hooks), len(sub._forward_pre_hooks))
            for name, sub in module.named_modules()
        ],
    }


@pytest.mark.parametrize("kind", ["tta", "early"])
def test_prediction_leaves_the_estimator_as_it_was(fitted, digit_images, kind):
    clf = fitted[kind]
    X, y = digit_images.X_target, digit_images.y_target
    before = _snapshot(clf)
    for method in METHODS:
        getattr(clf, method)(X[:40])
    clf.score(X, y)
    after = _snapshot(clf)
    assert after["estimator"].keys() == before["estimator"].keys()
    for name, value in before["estimator"].items():
        assert after["estimator"][name] is value, name
    assert after["frozen_cache_"] == before["frozen_cache_"]
    assert after["net"].keys() == before["net"].keys()
    for name, value in before["net"].items():
        assert after["net"][name] is value, name
    assert after["module"] is before["module"]
    for name, tensor in before["state"].items():
        assert torch.equal(after["state"][name], tensor), name
    assert after["modes"] == before["modes"]
    assert after["hooks"] == before["hooks"]


# ------------------------------------- the forward pass of prediction (_predict)


class _TwoOutputs(torch.nn.Module):
    """Returns (logits, features) of a fitted MLP, as some networks do."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, X):
        z = self.mlp.features(X)
        return self.mlp.head(z), z


class _DoublesInPlace(torch.nn.Module):
    """Doubles its input in place before its layers, as some preprocessing does."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)

    def forward(self, X):
        X *= 2.0
        return self.layer(X)


def _fitted_on_digits(digits, module, **net_params):
    X, y = digits.X_source, digits.y_source
    net = tiny_classifier_net(module, max_epochs=2, **net_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return TransferClassifier(net, random_state=0).fit(X[:300], y[:300])


@pytest.mark.parametrize("module", ["mlp", "two_outputs", "in_place"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_are_skorchs_forward_bit_for_bit(digits, module, dtype):
    clf = _fitted_on_digits(digits, _DoublesInPlace if module == "in_place" else MLP)
    if module == "two_outputs":  # predict takes the first of a tuple
        clf.net_.module_ = _TwoOutputs(clf.net_.module_).eval()
    X = np.ascontiguousarray(digits.X_test[:100], dtype=dtype)  # 4 batches of 32
    given = X.copy()
    # skorch's own forward pass (its iterator, evaluation_step and infer).
    out = NeuralNetClassifier.forward(clf.net_, X.astype(np.float32), training=False)
    logits = (out[0] if isinstance(out, tuple) else out).double()
    np.testing.assert_array_equal(
        clf.predict_proba(X), torch.softmax(logits, dim=1).numpy()
    )
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[logits.argmax(1)])
    np.testing.assert_array_equal(X, given)  # the user's array is untouched
    np.testing.assert_array_equal(
        clf.predict_proba(X), torch.softmax(logits, dim=1).numpy()
    )


def test_a_network_writing_its_input_in_place_never_changes_the_users_array(digits):
    first = torch.nn.Sequential(torch.nn.ReLU(inplace=True), torch.nn.Linear(64, 10))
    clf = _fitted_on_digits(digits, first)
    X = np.ascontiguousarray(digits.X_test[:100], dtype=np.float32) - 8.0
    given = X.copy()
    expected = clf.net_.module_(torch.from_numpy(given.copy())).detach()
    np.testing.assert_array_equal(clf.decision_function(X), expected.double().numpy())
    np.testing.assert_array_equal(X, given)


class _InPlaceStem(torch.nn.Module):
    """A stem that writes its input in place, then a body and a head."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.ReLU(inplace=True), torch.nn.Linear(64, 16), torch.nn.Tanh()
        )
        self.head = torch.nn.Linear(16, 5)

    def forward(self, X):
        return self.head(self.features(X))


def test_transform_and_a_cached_fit_never_change_the_users_array(digits):
    # transform (the head's input) and the frozen stage's pass of a cached fit
    # ran the network on views of the user's float32 rows: a stem writing its
    # input in place zeroed the user's negative values, in silence.
    torch.manual_seed(0)
    net = tiny_classifier_net(_InPlaceStem(), max_epochs=2)
    X = np.ascontiguousarray(digits.X_source[:200], dtype=np.float32) - 8.0
    given = X.copy()
    clf = TransferClassifier(net, head="head", frozen="features.*", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit_source(X, digits.y_source[:200] % 5)
        clf.fit(X, digits.y_source[:200] % 5)
    assert clf.frozen_cache_["cached"]
    np.testing.assert_array_equal(X, given)
    features = clf.transform(X)
    np.testing.assert_array_equal(X, given)
    with torch.no_grad():
        expected = clf.net_.module_.features(torch.from_numpy(given.copy()))
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_only_torchs_reading_layers_run_on_the_users_rows_without_a_copy():
    linear = torch.nn.Linear(4, 2)
    assert _predict.reads_input(MLP(n_features_in=4, n_outputs=2))
    assert _predict.reads_input(torch.nn.Sequential(torch.nn.Flatten(), linear))
    assert not _predict.reads_input(
        torch.nn.Sequential(torch.nn.ReLU(inplace=True), linear)
    )
    assert not _predict.reads_input(_DoublesInPlace())

    class MyLinear(torch.nn.Linear):
        pass

    assert not _predict.reads_input(MyLinear(4, 2))
    hooked = torch.nn.Linear(4, 2)
    hooked.register_forward_pre_hook(lambda module, args: None)
    assert not _predict.reads_input(torch.nn.Sequential(hooked))
