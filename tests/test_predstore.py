"""Prediction through the store: the frozen stage's outputs reused only when right."""

import functools
import pickle
import warnings

import numpy as np
import pytest
import torch
from nets import MLP, ConvNet, equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.exceptions import ConvergenceWarning
from torch import nn

import sktransfer
from sktransfer import TransferClassifier, TransferRegressor


class DropoutHeadNet(ConvNet):
    """ConvNet with a dropout in its (trainable) head: off when predicting."""

    def __init__(self, n_outputs=10):
        super().__init__(n_outputs)
        self.head = nn.Sequential(
            nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, n_outputs)
        )


class EvalBranchNet(ConvNet):
    """ConvNet whose forward scales the features by a hair in evaluation mode only."""

    def forward(self, X):
        features = self.features(X)
        if not self.training:  # traced in training mode: the split lacks it
            features = features * (1 + 2**-20)
        return self.head(features)


class TemperatureNet(ConvNet):
    """ConvNet whose outputs are divided by a plain float (temperature scaling)."""

    def __init__(self, n_outputs=10):
        super().__init__(n_outputs)
        self.temperature = 1.0

    def forward(self, X):
        return self.head(self.features(X)) / self.temperature


class Scale(nn.Module):
    """A parameter-free layer with a plain float setting."""

    def __init__(self, s=1.0):
        super().__init__()
        self.s = s

    def forward(self, X):
        return X * self.s


class ScaledNet(ConvNet):
    """ConvNet whose frozen stage ends with a Scale layer."""

    def __init__(self, n_outputs=10):
        super().__init__(n_outputs)
        self.features.append(Scale(1.0))


SHIFT = 0.0  # a module-level value GlobalNet's forward reads


class GlobalNet(ConvNet):
    """ConvNet whose forward reads a module-level float: no attribute of its own."""

    def forward(self, X):
        return self.head(self.features(X) + SHIFT)


class Flip:
    """A deterministic augmentation: mirrors each image left to right."""

    def __call__(self, X):
        return torch.flip(X, (-1,))


# Each test starts from an empty store and leaves the store's bound as it was.
pytestmark = pytest.mark.usefixtures("empty_frozen_store")


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _fitted(weights, digit_images, module=ConvNet, **params):
    net = tiny_classifier_net(module, max_epochs=2)
    clf = TransferClassifier(net, frozen="features.*", random_state=0, **params)
    X, y = digit_images.X_target, digit_images.y_target
    return _fit(clf.load_source(weights), X, y)


def _by_hand(module, X, batch_size=32):
    """The module's outputs, batch by batch in evaluation mode, with plain torch."""
    was = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    with torch.no_grad():
        out = torch.cat(
            [
                module(torch.from_numpy(X[i : i + batch_size]))
                for i in range(0, len(X), batch_size)
            ]
        )
    for sub, training in was:
        sub.training = training
    return out.double().numpy()


def _outputs(clf):
    return clf.frozen_cache_["predict_outputs"]


@pytest.mark.parametrize("module", [ConvNet, DropoutHeadNet])
def test_predictions_from_the_store_are_the_modules_bit_for_bit(
    source_weights, digit_images, module
):
    clf = _fitted(source_weights, digit_images, module)
    X = digit_images.X_test[:100]
    expected = _by_hand(clf.net_.module_, X)  # BatchNorm's running statistics
    scores = clf.decision_function(X)
    assert _outputs(clf) == "computed"
    np.testing.assert_array_equal(scores, expected)
    proba = clf.predict_proba(X)
    assert _outputs(clf) == "reused"
    np.testing.assert_array_equal(
        proba, torch.softmax(torch.from_numpy(expected), 1).numpy()
    )
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected.argmax(1)])
    y = digit_images.y_test[:100]
    assert clf.score(X, y) == np.mean(clf.classes_[expected.argmax(1)] == y)
    assert _outputs(clf) == "reused"
    # skorch's predict leaves the whole module in evaluation mode, as here.
    assert not any(sub.training for sub in clf.net_.module_.modules())
    assert clf.net_.module_ is clf._predict_stage.module  # put back after each call


def test_store_off_or_copied_estimator_takes_the_plain_path(
    source_weights, digit_images
):
    clf = _fitted(source_weights, digit_images)
    X = digit_images.X_test[:100]
    first = clf.predict_proba(X)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), first)
    assert _outputs(copy) is None
    assert "unpickled" in copy.frozen_cache_["predict_reason"]
    sktransfer.set_frozen_store_limit(0)
    np.testing.assert_array_equal(clf.predict_proba(X), first)
    assert _outputs(clf) is None
    assert "store is off" in clf.frozen_cache_["predict_reason"]


def test_outputs_beyond_the_stores_bound_are_not_materialised(
    source_weights, digit_images
):
    clf = _fitted(source_weights, digit_images)
    X = digit_images.X_test[:100]
    nbytes = clf._predict_stage.split.nbytes(len(X))
    sktransfer.set_frozen_store_limit(nbytes - 1)
    np.testing.assert_array_equal(
        clf.decision_function(X), _by_hand(clf.net_.module_, X)
    )
    assert _outputs(clf) is None
    assert "exceed the store's bound" in clf.frozen_cache_["predict_reason"]
    assert sktransfer.frozen_store_info()["nbytes"] <= nbytes - 1


def _change_weights_in_place(clf, X, y):
    with torch.no_grad():
        clf.net_.module_.features[0].weight.mul_(1.5)


def _net_partial_fit(clf, X, y):
    clf.net_.partial_fit(X, clf.classes_.searchsorted(y))  # trains every parameter


def _load_params(clf, X, y):
    state = {k: v.clone() for k, v in clf.net_.module_.state_dict().items()}
    state["features.1.running_mean"] += 0.25
    clf.net_.module_.load_state_dict(state)


def _replace_layer(clf, X, y):
    clf.net_.module_.features[2] = nn.LeakyReLU(0.5)


def _reinitialise(clf, X, y):
    clf.net_.set_params(module__n_outputs=len(clf.classes_))  # a new module_


def _forward_hook(clf, X, y):
    clf.net_.module_.register_forward_hook(lambda mod, args, out: out * 2)


def _net_method(clf, X, y):
    clf.net_.infer = functools.partial(type(clf.net_).infer, clf.net_)


CHANGES = {
    "rows": None,
    "weights in place": _change_weights_in_place,
    "net_.partial_fit": _net_partial_fit,
    "load_state_dict": _load_params,
    "replaced layer": _replace_layer,
    "set_params": _reinitialise,
    "module hook": _forward_hook,
    "net method": _net_method,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_nothing_stale_is_served_after_a_part_of_the_key_changes(
    source_weights, digit_images, change
):
    clf = _fitted(source_weights, digit_images)
    X, y = digit_images.X_test[:100], digit_images.y_test[:100]
    clf.decision_function(X)
    clf.decision_function(X)
    assert _outputs(clf) == "reused"
    if change == "rows":
        X = X.copy()
        X[5, 0, 3, 3] += 1e-3
    else:
        CHANGES[change](clf, X, y)
    scores = clf.decision_function(X)
    assert _outputs(clf) != "reused"
    np.testing.assert_array_equal(scores, _by_hand(clf.net_.module_, X))
    if change in ("rows", "weights in place", "net_.partial_fit", "load_state_dict"):
        assert _outputs(clf) == "computed"  # still provable: computed afresh
    else:
        assert _outputs(clf) is None, clf.frozen_cache_["predict_reason"]


def test_warm_start_refit_predicts_from_its_own_weights(source_weights, digit_images):
    net = tiny_classifier_net(ConvNet, max_epochs=2, warm_start=True)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    clf.load_source(source_weights)
    _fit(clf, digit_images.X_target, digit_images.y_target)
    X, y = digit_images.X_target, digit_images.y_target
    X_test = digit_images.X_test[:100]
    before = clf.decision_function(X_test)
    _fit(clf.set_params(frozen=()), X, y)  # trains the stage too
    after = clf.decision_function(X_test)
    assert _outputs(clf) is None  # nothing frozen: no stage, the plain path
    np.testing.assert_array_equal(after, _by_hand(clf.net_.module_, X_test))
    assert not np.array_equal(before, after)


def test_test_time_views_through_the_store_match_the_plain_path(
    source_weights, digit_images
):
    clf = _fitted(
        source_weights,
        digit_images,
        augment=Flip(),
        cache_views=1,
        tta_views=2,
    )
    assert clf.frozen_cache_["cached"]
    X = digit_images.X_test[:100]
    stored = clf.predict_proba(X)
    misses = sktransfer.frozen_store_info()["misses"]
    assert misses == 2  # the rows and their flip (fit's views are never stored)
    again = clf.predict_proba(X)
    assert _outputs(clf) == "reused"
    assert sktransfer.frozen_store_info()["misses"] == misses
    sktransfer.set_frozen_store_limit(0)
    plain = clf.predict_proba(X)
    np.testing.assert_array_equal(stored, plain)
    np.testing.assert_array_equal(again, plain)


def test_regressor_and_transform_take_the_stage_from_the_store():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 6)).astype(np.float32)
    y = X @ rng.normal(size=(6, 2))
    reg = TransferRegressor(
        tiny_regressor_net(max_epochs=2), frozen="features.*", random_state=0
    )
    reg.fit_source(X[:100], y[:100, 0])
    _fit(reg, X[:100], y[:100])
    module = reg.net_.module_
    assert isinstance(module, MLP)
    expected = _by_hand(module, X[100:]) * reg._y_scale + reg._y_mean
    np.testing.assert_array_equal(reg.predict(X[100:]), expected)
    assert _outputs(reg) == "computed"
    with torch.no_grad():
        module.eval()
        features = module.features(torch.from_numpy(X[100:])).numpy()
    np.testing.assert_array_equal(reg.transform(X[100:]), features)
    assert _outputs(reg) == "reused"
    clone = TransferRegressor(
        tiny_regressor_net(max_epochs=2), frozen="features.*", random_state=0
    )
    clone.fit_source(X[:100], y[:100, 0])
    _fit(clone, X[:100], y[:100])
    assert equal_weights(clone.net_.module_.state_dict(), module.state_dict())
    np.testing.assert_array_equal(clone.predict(X[100:]), expected)
    assert _outputs(clone) == "reused"  # another fit's outputs for the same rows


def test_a_forward_that_depends_on_training_mode_is_not_split_at_predict(
    source_weights, digit_images
):
    clf = _fitted(source_weights, digit_images, EvalBranchNet)
    assert clf.frozen_cache_["cached"]  # fit trains through the split, as traced
    assert clf._predict_stage is None
    assert "self.training" in clf.frozen_cache_["predict_reason"]
    X = digit_images.X_test[:100]
    np.testing.assert_array_equal(
        clf.decision_function(X), _by_hand(clf.net_.module_, X)
    )
    assert _outputs(clf) is None


def _temperature(module):
    module.temperature = 4.0


def _scale_in_stage(module):
    module.features[5].s = 0.0


def _hook_on_sequential(module):
    module.features.register_forward_hook(lambda mod, args, out: out * 0 + 1)


def _pre_hook_with_kwargs(module):
    def hook(mod, args, kwargs):
        return (args[0] * 0.5,), kwargs

    module.features.register_forward_pre_hook(hook, with_kwargs=True)


def _submodule_forward(module):
    module.features.forward = lambda X: torch.ones(len(X), 64)


STALE = {
    "temperature": (TemperatureNet, _temperature, "'temperature'"),
    "float of a layer in the stage": (ScaledNet, _scale_in_stage, "'s'"),
    "hook on a Sequential": (ConvNet, _hook_on_sequential, "'features'"),
    "pre-hook with kwargs": (ConvNet, _pre_hook_with_kwargs, "'features'"),
    "forward of a submodule": (ConvNet, _submodule_forward, "forward"),
}


@pytest.mark.parametrize("change", list(STALE))
def test_what_the_traced_split_baked_in_or_skips_is_checked_at_predict(
    source_weights, digit_images, change
):
    module, edit, named = STALE[change]
    clf = _fitted(source_weights, digit_images, module)
    X = digit_images.X_test[:100]
    clf.decision_function(X)
    clf.decision_function(X)
    assert _outputs(clf) == "reused"
    edit(clf.net_.module_)
    scores = clf.decision_function(X)
    expected = _by_hand(clf.net_.module_, X)
    split = clf._predict_stage.split
    traced = _by_hand(nn.Sequential(split.stage, split.rest), X)
    assert not np.array_equal(expected, traced)  # the split would be stale
    np.testing.assert_array_equal(scores, expected)
    assert _outputs(clf) is None
    assert named in clf.frozen_cache_["predict_reason"]
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected.argmax(1)])


def test_a_change_no_check_sees_is_caught_on_the_calls_rows(
    source_weights, digit_images, monkeypatch
):
    clf = _fitted(source_weights, digit_images, GlobalNet)
    X = digit_images.X_test[:100]
    clf.decision_function(X)
    assert _outputs(clf) == "computed"
    monkeypatch.setitem(globals(), "SHIFT", 0.5)  # fx baked SHIFT = 0.0 in
    assert clf._predict_stage.problem(clf.net_.module_) is None
    scores = clf.decision_function(X)
    np.testing.assert_array_equal(scores, _by_hand(clf.net_.module_, X))
    assert _outputs(clf) is None
    assert "this call's first rows" in clf.frozen_cache_["predict_reason"]
    monkeypatch.setitem(globals(), "SHIFT", 0.0)
    clf.decision_function(X)
    assert _outputs(clf) == "reused"


def test_the_proof_on_the_calls_rows_leaves_the_module_as_it_was(
    source_weights, digit_images
):
    clf = _fitted(source_weights, digit_images)
    module = clf.net_.module_
    module.train()  # BatchNorm would update its statistics outside eval mode
    buffers = {k: v.clone() for k, v in module.state_dict().items()}
    X = digit_images.X_test[:3]  # fewer rows than the proof takes
    np.testing.assert_array_equal(clf.decision_function(X), _by_hand(module, X))
    assert _outputs(clf) == "computed"
    assert equal_weights(module.state_dict(), buffers)
