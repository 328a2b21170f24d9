"""One lifetime: nothing of a fit is left on the net or its module afterwards.

After ``fit``, ``partial_fit``, a fit that fails inside the module's forward and
a fit interrupted by a callback, the fitted net and its module must carry no
forward hooks, no wrapped ``get_loss``/``train_step``, no swapped submodules, no
callbacks beyond the net's own, and every parameter's ``requires_grad`` flag as
it arrived (frozen for the fit only).
"""

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import ValidSplit

from sktransfer import TransferClassifier

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


class FailingConvNet(ConvNet):
    """The tests' ConvNet, whose forward raises on its ``fail_at``-th call."""

    def __init__(self, n_outputs=10, fail_at=-1):
        super().__init__(n_outputs)
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, X):
        self.calls += 1
        if self.calls == self.fail_at:
            msg = "forward failed mid-epoch"
            raise RuntimeError(msg)
        return super().forward(X)


class Interrupt(Callback):
    """Raise KeyboardInterrupt after the first batch of the first epoch."""

    def on_batch_end(self, net, **kwargs):
        raise KeyboardInterrupt


def _module_snapshot(module):
    """Names and types of every submodule, as a tuple."""
    return tuple((name, type(sub)) for name, sub in module.named_modules())


def _assert_clean(net, module_types, callbacks):
    module = net.module_
    for name, sub in module.named_modules():
        for hooks in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            assert not getattr(sub, hooks), f"{hooks} left on {name or 'module_'}"
    for method in ("get_loss", "train_step", "train_step_single", "infer"):
        assert method not in vars(net), f"net.{method} is still wrapped"
    assert _module_snapshot(module) == module_types
    names = [name for name, _ in net.callbacks_]
    assert names == callbacks, names
    assert not torch.is_autocast_enabled("cpu")
    assert torch.is_grad_enabled()
    # Frozen for the fit only: every parameter trainable again.
    assert all(p.requires_grad for p in module.parameters())


def _callbacks_of(net):
    """The callbacks plain skorch installs on ``net`` (the reference list)."""
    return [name for name, _ in clone(net).initialize().callbacks_]


@pytest.fixture(scope="module")
def pretrained(digit_images):
    net = tiny_classifier_net(ConvNet, max_epochs=2)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    return clf.fit_source(digit_images.X_source[:200], digit_images.y_source[:200])


@pytest.mark.parametrize("cache_frozen", [True, False])
def test_fit_and_partial_fit_leave_nothing_behind(
    pretrained, digit_images, cache_frozen
):
    X, y = digit_images.X_target, digit_images.y_target
    clf = clone(pretrained).set_params(cache_frozen=cache_frozen)
    clf.fit(X, y)
    assert clf.frozen_cache_["cached"] is cache_frozen
    types = _module_snapshot(ConvNet(5))
    expected = _callbacks_of(clf.net)
    _assert_clean(clf.net_, types, expected)
    clf.partial_fit(X, y)
    _assert_clean(clf.net_, types, expected)


class Shift:
    """A deterministic augmentation (picklable)."""

    def __call__(self, X):
        return X + 0.1


@pytest.mark.parametrize(
    "settings",
    [
        {"l2sp": 0.01, "layer_decay": 0.5, "mixup_alpha": 0.2, "augment": Shift()},
        {"autocast": "bfloat16", "tta_views": 1, "augment": Shift()},
        {"early_stopping": True, "frozen": ()},
    ],
)
def test_every_setting_leaves_nothing_behind(pretrained, digit_images, settings):
    X, y = digit_images.X_target, digit_images.y_target
    clf = clone(pretrained).set_params(**settings)
    weights = np.linspace(0.5, 2.0, len(X))
    clf.fit(X, y, sample_weight=weights)
    types = _module_snapshot(ConvNet(5))
    template = clone(clf.net)
    if clf.early_stopping:  # documented: the net gets skorch's EarlyStopping
        template.set_params(
            train_split=ValidSplit(10),
            callbacks=[("early_stopping", EarlyStopping())],
        )
    expected = _callbacks_of(template)
    _assert_clean(clf.net_, types, expected)
    # partial_fit ignores early_stopping (as MLPClassifier's does): the template's.
    clf.partial_fit(X, y, sample_weight=weights)
    _assert_clean(clf.net_, types, _callbacks_of(clf.net))


def test_a_failed_fit_leaves_nothing_behind(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    # Uncached, so that every batch runs the module's own forward.
    net = tiny_classifier_net(FailingConvNet, module__fail_at=-1, max_epochs=2)
    clf = TransferClassifier(
        net, frozen="features.*", cache_frozen=False, random_state=0
    )
    clf.fit(X, y)
    types = _module_snapshot(clf.net_.module_)
    expected = _callbacks_of(clf.net)
    clf.set_params(net__module__fail_at=3)  # the 3rd forward of the next fit
    with pytest.raises(RuntimeError, match="forward failed mid-epoch"):
        clf.partial_fit(X, y)
    _assert_clean(clf.net_, types, expected)
    # A fresh fit whose forward fails: the estimator stays as it was.
    failing = TransferClassifier(
        tiny_classifier_net(FailingConvNet, module__fail_at=3, max_epochs=2),
        frozen="features.*",
        cache_frozen=False,
        random_state=0,
    )
    with pytest.raises(RuntimeError, match="forward failed mid-epoch"):
        failing.fit(X, y)
    assert not hasattr(failing, "net_")


def test_an_interrupted_fit_leaves_nothing_behind(pretrained, digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    clf = clone(pretrained).set_params(
        net__callbacks=[("interrupt", Interrupt())], net__max_epochs=3
    )
    # skorch catches KeyboardInterrupt, ends the fit and keeps the net.
    clf.fit(X, y)
    assert len(clf.net_.history) == 1
    expected = _callbacks_of(clf.net)
    assert "interrupt" in expected
    _assert_clean(clf.net_, _module_snapshot(ConvNet(5)), expected)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)


def test_autocast_with_early_stopping(pretrained, digit_images):
    # skorch's valid_acc scoring predicts inside the autocast scope: the net's
    # outputs come back in float32, and nothing of the cast outlives fit.
    clf = clone(pretrained).set_params(autocast="bfloat16", early_stopping=True)
    clf.fit(digit_images.X_target, digit_images.y_target)
    assert "infer" not in vars(clf.net_)
    scores = [row["valid_acc"] for row in clf.net_.history]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert len(scores) == len(clf.net_.history) > 0


def test_autocast_puts_back_an_infer_the_net_had_of_its_own():
    # A net whose infer was set on the instance gets that infer back after the
    # fit's autocast scope, not skorch's.
    from skorch import NeuralNetClassifier

    from sktransfer._skorch import _finetune

    net = NeuralNetClassifier(torch.nn.Linear(2, 2))
    calls = []

    def own_infer(x, **fit_params):
        calls.append(len(x))
        return NeuralNetClassifier.infer(net, x, **fit_params)

    net.infer = own_infer
    net.initialize()
    with _finetune.autocast("bfloat16", "cpu", net):
        out = net.infer(torch.ones(3, 2))
    assert out.dtype == torch.float32
    assert vars(net)["infer"] is own_infer
    assert calls == [3]
