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

from sktransfer import TransferClassifier


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
