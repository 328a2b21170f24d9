"""The public ``sktransfer_safe`` declaration of callbacks and losses."""

import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from skorch.callbacks import Callback

from sktransfer import TransferClassifier
from sktransfer._fit._guard import NonFiniteLoss
from sktransfer._fit._progress import PlainPrintLog
from sktransfer._fit._stopping import RestoreBest
from sktransfer._skorch._adapt_fit import AdaptLoss, TargetStatistics
from sktransfer._skorch._finetune import Unfreeze
from sktransfer._skorch._weights import WeightedValidLoss


class Declared(Callback):
    """Declares it reads neither samples nor the frozen stage, nor sets modes."""

    sktransfer_safe = True

    def on_epoch_end(self, net, **kwargs):
        pass


class Inherits(Declared):
    """Inherits the declaration, which does not count: it may do more."""

    def on_epoch_end(self, net, **kwargs):
        net.module_.state_dict()


class Legacy(Callback):
    """The private marker of earlier versions, still honoured."""

    _sktransfer_cache_safe = True

    def on_epoch_end(self, net, **kwargs):
        pass


class Undeclared(Callback):
    def on_epoch_end(self, net, **kwargs):
        pass


@pytest.mark.parametrize(
    ("callback", "cached"),
    [(Declared(), True), (Legacy(), True), (Inherits(), False), (Undeclared(), False)],
)
def test_declared_callbacks_keep_the_frozen_cache(digit_images, callback, cached):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(ConvNet, callbacks=[("cb", callback)])
    clf = TransferClassifier(net, frozen="features.*", random_state=0).fit(X, y)
    assert clf.frozen_cache_["cached"] is cached
    if not cached:
        assert "the callback 'cb' may read or write" in clf.frozen_cache_["reason"]


class RecordsMode(ConvNet):
    """The tests' ConvNet, recording its training flag at each training forward."""

    def __init__(self, n_outputs=10):
        super().__init__(n_outputs)
        self.modes = []

    def forward(self, X):
        if torch.is_grad_enabled():  # a training batch, not inference
            self.modes.append(self.training)
        return super().forward(X)


class SwitchesToEval(Callback):
    """Puts the module in evaluation mode after each batch (an undeclared lie)."""

    def on_batch_end(self, net, **kwargs):
        net.module_.eval()


class DeclaredSwitchesToEval(SwitchesToEval):
    sktransfer_safe = True


@pytest.mark.parametrize(
    ("callback", "trusted"),
    [(SwitchesToEval(), False), (DeclaredSwitchesToEval(), True)],
)
def test_the_lean_step_trusts_only_declared_callbacks(digit_images, callback, trusted):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(
        RecordsMode, callbacks=[("cb", callback)], max_epochs=1, batch_size=10
    )
    clf = TransferClassifier(net, cache_frozen=False, random_state=0).fit(X, y)
    modes = clf.net_.module_.modes
    assert len(modes) == len(X) // 10
    # Undeclared: training mode is restored before every batch. Declared: the
    # step believes the callback, so batches after the first run as it left them.
    assert modes[0]
    assert all(modes) is not trusted


class LegacyStepSwitchesToEval(SwitchesToEval):
    """A user's class with the lean step's private marker of earlier versions."""

    _sktransfer_step_safe = True


def test_the_lean_step_still_trusts_the_old_private_marker(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(
        RecordsMode,
        callbacks=[("cb", LegacyStepSwitchesToEval())],
        max_epochs=1,
        batch_size=10,
    )
    clf = TransferClassifier(net, cache_frozen=False, random_state=0).fit(X, y)
    modes = clf.net_.module_.modes
    # Believed, as a declared callback: batches after the first run in the
    # evaluation mode the callback left them in.
    assert modes[0]
    assert not any(modes[1:])


@pytest.mark.parametrize(
    "cls",
    [
        RestoreBest,
        NonFiniteLoss,
        PlainPrintLog,
        WeightedValidLoss,
        Unfreeze,
        AdaptLoss,
        TargetStatistics,
    ],
)
def test_the_package_declares_its_own_callbacks_through_the_public_protocol(cls):
    own = vars(cls)
    assert own.get("sktransfer_safe") is True
    assert not {"_sktransfer_cache_safe", "_sktransfer_step_safe"} & own.keys()
