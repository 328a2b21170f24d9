"""The lean training step gives exactly what skorch's own step gives."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from skorch import NeuralNetClassifier
from skorch import net as skorch_net
from skorch.callbacks import Callback, GradientNormClipping, LRScheduler
from torch.optim.lr_scheduler import CyclicLR

from sktransfer import TransferClassifier, TransferRegressor
from sktransfer._skorch import _step
from sktransfer._skorch._step import LeanNeuralNetClassifier, LeanNeuralNetRegressor


class Recorder(Callback):
    """Records what its per-batch hooks receive."""

    def initialize(self):
        self.calls_ = []
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        self.calls_.append(
            ("end", training, kwargs["loss"].item(), tuple(kwargs["y_pred"].shape))
        )

    def on_grad_computed(self, net, named_parameters, batch=None, training=False):
        norms = tuple(float(p.grad.norm()) for _, p in named_parameters)
        self.calls_.append(("grad", training, len(batch[0]), norms))


class SwitchesToEval(Callback):
    """A callback that leaves the module in evaluation mode after each batch."""

    def on_batch_end(self, net, **kwargs):
        net.module_.eval()


def _history(net):
    """The history without durations."""
    drop = {"dur"}
    return [
        {
            k: (
                [{b: v for b, v in batch.items() if b not in drop} for batch in val]
                if k == "batches"
                else val
            )
            for k, val in epoch.items()
            if k not in drop
        }
        for epoch in net.history
    ]


def _fit_both(make, X, y, monkeypatch, *, pretrain=None):
    """Fit ``make()`` with the lean step and with skorch's; return both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lean = make()
        if pretrain is not None:
            lean.fit_source(*pretrain)
        lean.fit(X, y)
        with monkeypatch.context() as patch:
            patch.setattr(_step, "_LEAN", {})
            plain = make()
            if pretrain is not None:
                plain.fit_source(*pretrain)
            plain.fit(X, y)
    return lean, plain


def _assert_same(lean, plain):
    assert equal_weights(
        lean.net_.module_.state_dict(), plain.net_.module_.state_dict()
    )
    assert _history(lean.net_) == _history(plain.net_)


def test_estimators_train_with_the_lean_class(digits):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=1), random_state=0)
    clf.fit_source(digits.X_source, digits.y_source)
    clf.fit(digits.X_target, digits.y_target)
    assert type(clf.net_) is LeanNeuralNetClassifier
    reg = TransferRegressor(tiny_regressor_net(max_epochs=1), random_state=0)
    reg.fit(digits.X_target, digits.y_target.astype(float))
    assert type(reg.net_) is LeanNeuralNetRegressor
    assert type(clf.net) is NeuralNetClassifier  # the template is not changed


@pytest.mark.parametrize(
    "callbacks",
    [
        pytest.param([("rec", Recorder())], id="on_batch_end+on_grad_computed"),
        pytest.param([("clip", GradientNormClipping(0.05))], id="clipping"),
        pytest.param(
            [
                (
                    "sched",
                    LRScheduler(
                        CyclicLR,
                        base_lr=1e-3,
                        max_lr=0.05,
                        step_size_up=3,
                        cycle_momentum=False,
                        step_every="batch",
                    ),
                )
            ],
            id="per-batch-LRScheduler",
        ),
        pytest.param([("eval", SwitchesToEval())], id="mode-switching-callback"),
    ],
)
def test_lean_step_is_bit_identical_to_skorchs(digit_images, monkeypatch, callbacks):
    data = digit_images

    def make():
        net = tiny_classifier_net(
            ConvNet, max_epochs=2, callbacks=[(n, clone(cb)) for n, cb in callbacks]
        )
        return TransferClassifier(net, random_state=0)

    lean, plain = _fit_both(
        make,
        data.X_target,
        data.y_target,
        monkeypatch,
        pretrain=(data.X_source[:200], data.y_source[:200]),
    )
    assert type(lean.net_) is LeanNeuralNetClassifier
    assert type(plain.net_) is NeuralNetClassifier
    _assert_same(lean, plain)
    # Pretraining ran the lean step too, and agrees.
    assert equal_weights(lean.source_weights_, plain.source_weights_)
    name = callbacks[0][0]
    if name == "rec":
        calls = dict(lean.net_.callbacks_)["rec"].calls_
        assert calls == dict(plain.net_.callbacks_)["rec"].calls_
        n_batches = 2 * -(-len(data.X_target) // 32)
        assert sum(c[0] == "grad" for c in calls) == n_batches
        assert sum(c[0] == "end" for c in calls) == n_batches


def test_modes_are_set_once_per_epoch_unless_a_callback_may_change_them(
    digits, monkeypatch
):
    switches = []
    original = NeuralNetClassifier._set_training

    def counting(self, training=True):
        switches.append(training)
        return original(self, training)

    monkeypatch.setattr(NeuralNetClassifier, "_set_training", counting)
    n_batches = -(-len(digits.X_target) // 32)
    # Once when each of the 2 epochs starts; then before every batch too.
    cases = (([], 2), ([("eval", SwitchesToEval())], 2 + 2 * n_batches))
    for callbacks, expected in cases:
        switches.clear()
        net = tiny_classifier_net(max_epochs=2, callbacks=callbacks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            TransferClassifier(net, random_state=0).fit(
                digits.X_target, digits.y_target
            )
        assert switches.count(True) == expected


def test_user_subclass_keeps_its_class_and_its_hooks_run(digits, monkeypatch):
    calls = []

    class MyNet(NeuralNetClassifier):
        def train_step_single(self, batch, **fit_params):
            calls.append(len(batch[0]))
            return super().train_step_single(batch, **fit_params)

    def make():
        return TransferClassifier(tiny_classifier_net(max_epochs=2), random_state=0)

    def make_sub():
        net = tiny_classifier_net(max_epochs=2)
        return TransferClassifier(MyNet(**net.get_params(deep=False)), random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sub = make_sub().fit(digits.X_target, digits.y_target)
        lean = make().fit(digits.X_target, digits.y_target)
    assert type(sub.net_) is MyNet
    n = len(digits.X_target)
    assert len(calls) == 2 * -(-n // 32)
    assert sum(calls) == 2 * n
    assert equal_weights(sub.net_.module_.state_dict(), lean.net_.module_.state_dict())
    assert _history(sub.net_) == _history(lean.net_)


def test_regressor_lean_step_is_bit_identical(digits, monkeypatch):
    y = digits.X_target[:, :2].astype(float)

    def make():
        net = tiny_regressor_net(
            max_epochs=2, callbacks=[("clip", GradientNormClipping(0.1))]
        )
        return TransferRegressor(net, random_state=0)

    lean, plain = _fit_both(make, digits.X_target, y, monkeypatch)
    assert type(lean.net_) is LeanNeuralNetRegressor
    _assert_same(lean, plain)


def test_l2sp_loss_wrapper_still_runs_in_the_lean_step(digits, monkeypatch):
    def make():
        return TransferClassifier(
            tiny_classifier_net(max_epochs=2), l2sp=1.0, random_state=0
        )

    lean, plain = _fit_both(
        make,
        digits.X_target,
        digits.y_target,
        monkeypatch,
        pretrain=(digits.X_source, digits.y_source),
    )
    _assert_same(lean, plain)
    no_penalty = TransferClassifier(tiny_classifier_net(max_epochs=2), random_state=0)
    no_penalty.fit_source(digits.X_source, digits.y_source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        no_penalty.fit(digits.X_target, digits.y_target)
    assert _history(no_penalty.net_) != _history(lean.net_)  # the penalty counted


def test_fitted_lean_estimator_pickles_and_clones(digits):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=1), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digits.X_target, digits.y_target)
    again = pickle.loads(pickle.dumps(clf))
    assert type(again.net_) is LeanNeuralNetClassifier
    assert (
        again.predict_proba(digits.X_target) == clf.predict_proba(digits.X_target)
    ).all()
    assert type(clone(clf.net_)) is LeanNeuralNetClassifier
    assert "sktransfer_modes_held_" not in vars(clf.net_)


def test_lean_forward_is_skorchs_forward(digit_images):
    net = tiny_classifier_net(ConvNet, max_epochs=1, batch_size=16)
    clf = TransferClassifier(net, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digit_images.X_target, digit_images.y_target)
    X = digit_images.X_source[:100]  # 7 batches, the last one short
    clf.net_.module_.train()  # prediction must switch to evaluation mode
    lean = clf.net_.forward(X)
    plain = torch.cat(list(NeuralNetClassifier.forward_iter(clf.net_, X)))
    assert torch.equal(lean, plain)
    assert not lean.requires_grad
    assert not clf.net_.module_.features[1].training
    expected = torch.softmax(plain.double(), dim=1).numpy()
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


class InstanceGradHook(Callback):
    """A callback whose on_grad_computed is set on the instance, not the class."""

    def initialize(self):
        self.norms_ = []

        def on_grad_computed(net, named_parameters, batch=None, training=False):
            self.norms_.append(sum(float(p.grad.norm()) for _, p in named_parameters))

        self.on_grad_computed = on_grad_computed
        return self


def test_on_grad_computed_nobody_hears_is_not_built(digits, monkeypatch):
    # skorch builds a TeeGenerator over every parameter for on_grad_computed;
    # the lean step builds it only when something listens, with equal results.
    built = []
    original = skorch_net.TeeGenerator

    def counting(gen):
        built.append(1)
        return original(gen)

    monkeypatch.setattr(skorch_net, "TeeGenerator", counting)
    n_batches = 2 * -(-len(digits.X_target) // 32)
    for callbacks, expected in (
        ([], 0),  # no listener: not built
        ([("grad", InstanceGradHook())], n_batches),  # a hook set on the instance
        ([("rec", Recorder())], n_batches),
    ):
        built.clear()

        def make(callbacks=callbacks):
            net = tiny_classifier_net(
                max_epochs=2, callbacks=[(n, clone(cb)) for n, cb in callbacks]
            )
            return TransferClassifier(net, random_state=0)

        lean, plain = _fit_both(make, digits.X_target, digits.y_target, monkeypatch)
        _assert_same(lean, plain)
        assert len(built) == expected + n_batches  # + skorch's own step, always
        if callbacks and callbacks[0][0] == "grad":
            heard = dict(lean.net_.callbacks_)["grad"].norms_
            assert len(heard) == n_batches
            assert heard == dict(plain.net_.callbacks_)["grad"].norms_


@pytest.mark.parametrize("listen", [False, True], ids=["no-listener", "recorder"])
def test_lbfgs_closure_is_bit_identical(digits, monkeypatch, listen):
    # LBFGS calls the closure several times per step: the loss recorded is the
    # first evaluation's, and a listener hears every evaluation.
    def make():
        net = tiny_classifier_net(
            max_epochs=2,
            optimizer=torch.optim.LBFGS,
            optimizer__max_iter=4,
            lr=0.5,
            batch_size=25,
            callbacks=[("rec", Recorder())] if listen else [],
        )
        return TransferClassifier(net, random_state=0)

    lean, plain = _fit_both(make, digits.X_target, digits.y_target, monkeypatch)
    assert type(lean.net_) is LeanNeuralNetClassifier
    _assert_same(lean, plain)
    losses = [b["train_loss"] for epoch in lean.net_.history for b in epoch["batches"]]
    assert len(losses) == 2 * 2
    assert all(np.isfinite(losses))
    if listen:
        calls = dict(lean.net_.callbacks_)["rec"].calls_
        assert calls == dict(plain.net_.callbacks_)["rec"].calls_
        # More gradient evaluations than batches: every closure call is heard.
        assert sum(c[0] == "grad" for c in calls) > 4
