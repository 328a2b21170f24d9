"""Frozen layers computed once: when, that it changes nothing, and why not."""

import pickle
import re

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Checkpoint, EarlyStopping
from skorch.dataset import ValidSplit
from torch import nn

from sktransfer import TransferClassifier
from sktransfer._estimators import _base
from sktransfer._frozen_stage import _cache
from sktransfer._torch import _held, _layers, _transfer


class InputDropout(nn.Module):
    """Dropout on the input of the frozen layers: the stage is random while training."""

    def __init__(self, n_outputs=10, p=0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Dropout(p), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32)
        )
        self.head = nn.Linear(32, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


class Residual(nn.Module):
    """A trainable layer also reads the input: no stage feeds the rest alone."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.flat = nn.Flatten()
        self.features = nn.Linear(64, 64)
        self.mid = nn.Linear(64, 64)
        self.head = nn.Linear(64, n_outputs)

    def forward(self, X):
        X = self.flat(X)
        return self.head(self.mid(self.features(X)) + X)


class ResidualInStage(Residual):
    """The skip connection is inside the frozen stage: its sum is cached."""

    def forward(self, X):
        X = self.flat(X)
        return self.head(self.mid(self.features(X) + X))


class Branching(nn.Module):
    """Control flow on the data: torch.fx cannot trace it."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, n_outputs)

    def forward(self, X):
        Z = self.features(X)
        if Z.sum() > 0:
            Z = Z * 2
        return self.head(Z)


class Wide(nn.Module):
    """A frozen stage whose output is 8 times bigger than its input."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU())
        self.head = nn.Linear(512, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


@pytest.fixture(scope="module")
def pretrained_cnn(digit_images):
    net = tiny_classifier_net(ConvNet, max_epochs=4)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    return clf.fit_source(digit_images.X_source, digit_images.y_source)


def _fit_both(estimator, X, y):
    cached = clone(estimator).set_params(cache_frozen=True).fit(X, y)
    uncached = clone(estimator).set_params(cache_frozen=False).fit(X, y)
    return cached, uncached


def _assert_same_weights(a, b):
    state_b = b.net_.module_.state_dict()
    for key, value in a.net_.module_.state_dict().items():
        torch.testing.assert_close(value, state_b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", [None, ValidSplit(4, stratified=False)])
def test_cached_and_uncached_fine_tuning_agree(pretrained_cnn, digit_images, split):
    estimator = clone(pretrained_cnn).set_params(net__train_split=split)
    cached, uncached = _fit_both(
        estimator, digit_images.X_target, digit_images.y_target
    )
    assert cached.frozen_cache_["cached"]
    assert cached.frozen_cache_["stage"] == "features"  # the held block, one call
    assert cached.frozen_cache_["nbytes"] == len(digit_images.X_target) * 64 * 4
    assert cached.frozen_cache_["device"] == "cpu"
    assert not uncached.frozen_cache_["cached"]
    _assert_same_weights(cached, uncached)
    np.testing.assert_allclose(
        cached.net_.history[:, "train_loss"], uncached.net_.history[:, "train_loss"]
    )
    # predict runs the whole network, restored in the fitted net.
    assert isinstance(cached.net_.module_, ConvNet)
    np.testing.assert_allclose(
        cached.predict_proba(digit_images.X_test),
        uncached.predict_proba(digit_images.X_test),
        rtol=1e-4,
        atol=1e-6,
    )
    # The frozen stage, BatchNorm statistics included, is still the source's.
    for key in ("features.0.weight", "features.1.running_mean"):
        assert torch.equal(
            cached.net_.module_.state_dict()[key], pretrained_cnn.source_weights_[key]
        )


def test_auto_caches_a_frozen_backbone_and_survives_pickling(
    pretrained_cnn, digit_images
):
    clf = clone(pretrained_cnn).fit(digit_images.X_target, digit_images.y_target)
    assert clf.frozen_cache_["cached"]
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(
        restored.predict(digit_images.X_test), clf.predict(digit_images.X_test)
    )


def test_the_stage_ends_before_batchnorm_that_adapts(pretrained_cnn, digit_images):
    estimator = clone(pretrained_cnn).set_params(freeze_bn_stats=False)
    cached, uncached = _fit_both(
        estimator, digit_images.X_target, digit_images.y_target
    )
    # Only the convolution is cached; BatchNorm trains on batch statistics.
    assert cached.frozen_cache_["stage"] == "features_0"
    _assert_same_weights(cached, uncached)
    running = "features.1.running_mean"
    assert not torch.equal(
        cached.net_.module_.state_dict()[running],
        pretrained_cnn.source_weights_[running],
    )


@pytest.mark.parametrize(
    ("module", "frozen", "reason"),
    [
        (Residual, "features.*", "no frozen stage feeds the trainable layers"),
        (Branching, "features.*", "torch.fx cannot trace Branching"),
        (nn.Module, None, "no parameter is frozen"),
    ],
)
def test_caching_is_refused_and_the_reason_given(
    digits, module, frozen, reason, capsys
):
    if module is nn.Module:
        net, frozen = tiny_classifier_net(), ()
    else:
        net = tiny_classifier_net(module)
    clf = TransferClassifier(net, frozen=frozen, random_state=0, verbose=1)
    clf.fit(digits.X_target, digits.y_target)
    assert not clf.frozen_cache_["cached"]
    assert re.search(reason, clf.frozen_cache_["reason"])
    out = capsys.readouterr().out
    if module is not nn.Module:  # nothing frozen: nothing to explain
        assert re.search(reason, out)
        assert "Not caching the frozen layers" in out

    strict = clone(clf).set_params(cache_frozen=True, verbose=0)
    with pytest.raises(ValueError, match="cache_frozen=True, but the frozen layers"):
        strict.fit(digits.X_target, digits.y_target)
    assert not hasattr(strict, "net_")


def test_without_dropout_the_same_stage_is_cached(digits):
    net = tiny_classifier_net(InputDropout, module__p=0.0)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    cached, uncached = _fit_both(clf, digits.X_target, digits.y_target)
    assert cached.frozen_cache_["stage"] == "features"  # the held block, one call
    _assert_same_weights(cached, uncached)


def test_dropout_inside_frozen_layers_is_off_and_they_are_cached(digits):
    # Frozen means feature extraction: the dropout of the frozen block is off
    # while fine-tuning, cached or not, so the block is one deterministic stage.
    net = tiny_classifier_net(module__hidden_layer_sizes=(16, 16), module__dropout=0.3)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    cached, uncached = _fit_both(clf, digits.X_target, digits.y_target)
    assert cached.frozen_cache_["stage"] == "features"
    _assert_same_weights(cached, uncached)
    # With frozen layers in training mode (skorch's Freezer), the stage ends
    # at the first dropout, and fine-tuning draws through it: other weights.
    keep = clone(clf).set_params(freeze_bn_stats=False)
    keep_cached, keep_uncached = _fit_both(keep, digits.X_target, digits.y_target)
    assert keep_cached.frozen_cache_["stage"] == "features_2"  # Flatten, Linear, ReLU
    _assert_same_weights(keep_cached, keep_uncached)
    head = uncached.net_.module_.head.weight
    assert not torch.allclose(head, keep_uncached.net_.module_.head.weight)


def test_frozen_input_dropout_is_refused_in_training_mode(digits):
    net = tiny_classifier_net(InputDropout)
    clf = TransferClassifier(
        net, frozen="features.*", freeze_bn_stats=False, random_state=0
    )
    clf.fit(digits.X_target, digits.y_target)
    assert not clf.frozen_cache_["cached"]
    reason = r"features\.1 \(Dropout, p=0\.5\) is random"
    assert re.search(reason, clf.frozen_cache_["reason"])
    with pytest.raises(ValueError, match=reason):
        clone(clf).set_params(cache_frozen=True).fit(digits.X_target, digits.y_target)


class DropPath(nn.Module):
    """Stochastic depth as timm writes it (``timm.layers.DropPath``)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """A timm-style residual MLP block: norm, dropout inside, stochastic depth."""

    def __init__(self, dim, drop=0.2, drop_path=0.3):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        inner = self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))
        return x + self.drop_path(inner)


class TimmLike(nn.Module):
    """A body of stochastic blocks, a dropout before the head, ``x.size(0)``."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32))
        self.blocks = nn.Sequential(Block(32), Block(32))
        self.head_drop = nn.Dropout(0.5)
        self.head = nn.Linear(32, n_outputs)

    def forward(self, x):
        batch_size = x.size(0)
        x = self.blocks(self.stem(x))
        return self.head(self.head_drop(x.view(batch_size, -1)))


def test_a_frozen_body_with_dropout_and_stochastic_depth_is_cached(digits):
    X, y = digits.X_target, digits.y_target
    net = tiny_classifier_net(TimmLike, max_epochs=3)
    clf = TransferClassifier(net, frozen=("stem.*", "blocks.*"), random_state=0)
    cached, uncached = _fit_both(clf, X, y)
    assert cached.frozen_cache_["cached"], cached.frozen_cache_["reason"]
    # The dropout before the head belongs to the trained part: it stays out of
    # the stage and draws the same numbers cached or not.
    assert "head_drop" not in cached.frozen_cache_["stage"]
    _assert_same_weights(cached, uncached)
    # The frozen BatchNorm kept its statistics (initial: zeros and ones).
    stem = uncached.net_.module_.stem[2]
    torch.testing.assert_close(stem.running_mean, torch.zeros(32))
    # Frozen layers in training mode: random, so not cached, and other weights.
    keep = clone(clf).set_params(freeze_bn_stats=False).fit(X, y)
    assert not keep.frozen_cache_["cached"]
    head = uncached.net_.module_.head.weight
    assert not torch.allclose(head, keep.net_.module_.head.weight)


def test_a_skip_connection_inside_the_stage_is_cached(digits):
    clf = TransferClassifier(
        tiny_classifier_net(ResidualInStage), frozen="features.*", random_state=0
    )
    cached, uncached = _fit_both(clf, digits.X_target, digits.y_target)
    assert cached.frozen_cache_["stage"] == "add"
    _assert_same_weights(cached, uncached)


def test_auto_bounds_the_memory_of_the_cache(digits, monkeypatch):
    clf = TransferClassifier(
        tiny_classifier_net(Wide), frozen="features.*", random_state=0
    )
    monkeypatch.setattr(_base, "_CACHE_LIMIT", 0)
    clf.fit(digits.X_target, digits.y_target)
    # 512 float32 outputs per sample, eight times the 64 input features.
    assert not clf.frozen_cache_["cached"]
    assert "more than the training data" in clf.frozen_cache_["reason"]
    clf.set_params(cache_frozen=True).fit(digits.X_target, digits.y_target)
    assert clf.frozen_cache_["cached"]
    assert clf.frozen_cache_["nbytes"] == len(digits.X_target) * 512 * 4
    monkeypatch.setattr(_base, "_CACHE_LIMIT", 2**30)
    clf.set_params(cache_frozen="auto").fit(digits.X_target, digits.y_target)
    assert clf.frozen_cache_["cached"]


def test_cache_frozen_is_validated_and_grid_searchable(pretrained_cnn, digit_images):
    with pytest.raises(InvalidParameterError, match="cache_frozen"):
        clone(pretrained_cnn).set_params(cache_frozen="always").fit(
            digit_images.X_target, digit_images.y_target
        )

    def cached(estimator, X, y):
        return float(estimator.frozen_cache_["cached"])

    search = GridSearchCV(
        clone(pretrained_cnn),
        {"cache_frozen": [True, False]},
        cv=2,
        scoring={"accuracy": "accuracy", "log_loss": "neg_log_loss", "cached": cached},
        refit="accuracy",
    ).fit(digit_images.X_target, digit_images.y_target)
    results = search.cv_results_
    # Every fold's clone got its setting, and the two settings agree fold by fold.
    np.testing.assert_array_equal(results["mean_test_cached"], [1.0, 0.0])
    for i in range(2):
        scores = results[f"split{i}_test_accuracy"]
        assert scores[0] == scores[1]
        losses = results[f"split{i}_test_log_loss"]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert (
        search.best_estimator_.frozen_cache_["cached"]
        == (search.best_params_["cache_frozen"])
    )


def test_find_frozen_stage_leaves_the_module_as_it_was():
    torch.manual_seed(0)
    module = ConvNet(3)
    frozen = _layers.match_parameters(module, ("features.*",))
    _transfer.freeze(module, frozen)
    _held.hold_frozen_layers(module, frozen)
    module.head.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    modes = [m.training for m in module.modules()]
    probe = torch.rand(8, 1, 8, 8)
    rng = torch.get_rng_state()
    split, reason = _cache.find_frozen_stage(module, probe)
    assert reason is None
    assert split.sample_shape == (64,)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in module.modules()] == modes
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
    # The rest shares the module's parameters: training it trains the module.
    assert split.rest.get_parameter("head.0.weight") is module.head[0].weight
    X = torch.rand(5, 1, 8, 8)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(split.rest(split.stage(X)), module(X))


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # a few epochs on purpose
def test_auto_does_not_cache_under_callbacks_that_touch_the_module(
    pretrained_cnn, digit_images, tmp_path
):
    X, y = digit_images.X_target, digit_images.y_target
    safe = clone(pretrained_cnn).set_params(
        net__callbacks=[("stop", EarlyStopping(monitor="train_loss"))]
    )
    assert safe.fit(X, y).frozen_cache_["cached"]
    for name, callback in (
        ("checkpoint", Checkpoint(monitor="train_loss_best", dirname=str(tmp_path))),
        ("best", EarlyStopping(monitor="train_loss", load_best=True)),
    ):
        clf = clone(pretrained_cnn).set_params(net__callbacks=[(name, callback)])
        clf.fit(X, y)
        assert not clf.frozen_cache_["cached"]
        assert f"the callback {name!r} may read or write" in clf.frozen_cache_["reason"]
    # A checkpoint of the uncached fit holds the whole network.
    state = torch.load(tmp_path / "params.pt", weights_only=True)
    assert "features.0.weight" in state
    forced = clone(pretrained_cnn).set_params(
        cache_frozen=True,
        net__callbacks=[("best", EarlyStopping(monitor="train_loss", load_best=True))],
    )
    assert forced.fit(X, y).frozen_cache_["cached"]
