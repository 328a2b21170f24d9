"""A fit is right or it stops: interrupts, non-finite losses, convergence, settings."""

import os
import signal
import warnings

import numpy as np
import pytest
import torch
from nets import equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback, EarlyStopping
from torch import nn

from sktransfer import TransferClassifier, TransferRegressor
from sktransfer._fit._guard import NonFiniteLoss


class SigintAt(Callback):
    """Send a real SIGINT (as Ctrl-C does) at the end of the given epoch."""

    def __init__(self, epoch=2):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


class RaiseAt(Callback):
    """Stop training as skorch's EarlyStopping does: raise KeyboardInterrupt."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


class Record(Callback):
    """Record the weights each training call starts from, in ``Record.log``.

    A class attribute: the net template, callbacks included, is cloned.
    """

    log = []

    def on_train_begin(self, net, **kwargs):
        state = {k: v.clone() for k, v in net.module_.state_dict().items()}
        Record.log.append(state)


@pytest.fixture
def starts():
    Record.log = []
    return Record.log


def _data(digits):
    return (digits[k] for k in ("X_source", "y_source", "X_target", "y_target"))


def _state(est):
    return {k: v.clone() for k, v in est.net_.module_.state_dict().items()}


# ---------------------------------------------------------------- interrupts


def test_sigint_in_fit_raises_and_keeps_the_last_fit(digits):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit_source(Xs, ys).fit(Xt, yt)
    net_before, weights_before = clf.net_, _state(clf)
    source_before = {k: v.clone() for k, v in clf.source_weights_.items()}
    clf.set_params(net__max_epochs=50, net__callbacks=[SigintAt(2)])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(Xt, yt)
    assert clf.net_ is net_before
    assert equal_weights(clf.net_.module_.state_dict(), weights_before)
    assert equal_weights(clf.source_weights_, source_before)
    assert signal.getsignal(signal.SIGINT) is handler
    # skorch's convention (EarlyStopping): a callback's own KeyboardInterrupt
    # only ends training, and the fit returns normally.
    clf.set_params(net__callbacks=[RaiseAt()]).fit(Xt, yt)
    assert len(clf.net_.history) == 2


def test_sigint_in_fit_source_raises_and_leaves_it_unpretrained(digits):
    Xs, ys, Xt, yt = _data(digits)
    reg = TransferRegressor(
        tiny_regressor_net(max_epochs=50, callbacks=[SigintAt(2)]), random_state=0
    )
    with pytest.raises(KeyboardInterrupt):
        reg.fit_source(Xs, ys.astype(float))
    assert not hasattr(reg, "_pretrained")
    assert not hasattr(reg, "net_")


def test_sigint_stops_a_grid_search_at_the_first_fit(digits, starts):
    Xs, ys, Xt, yt = _data(digits)
    net = tiny_classifier_net(max_epochs=20, callbacks=[Record(), SigintAt(2)])
    search = GridSearchCV(
        TransferClassifier(net, random_state=0),
        {"net__lr": [0.01, 0.02]},
        cv=2,
        n_jobs=1,
    )
    with pytest.raises(KeyboardInterrupt):
        search.fit(Xt, yt)
    assert len(starts) == 1


# ------------------------------------------------------- non-finite loss


def test_non_finite_loss_in_fine_tuning_stops_and_keeps_the_last_fit(digits):
    Xs, ys, Xt, yt = _data(digits)
    # normalize_y=False: targets of 1e20 reach the loss as they are.
    reg = TransferRegressor(tiny_regressor_net(), normalize_y=False, random_state=0)
    reg.fit(Xt, yt.astype(float))
    net_before, weights_before = reg.net_, _state(reg)
    # (prediction - 1e20) ** 2 is 1e40, beyond float32: the first epoch's
    # loss is inf whatever the weights.
    with pytest.raises(ValueError, match=r"became inf in epoch 1 of fine-tuning"):
        reg.fit(Xt, np.full(len(Xt), 1e20))
    assert reg.net_ is net_before
    assert equal_weights(reg.net_.module_.state_dict(), weights_before)


def test_non_finite_loss_in_pretraining_stops_the_classifier(digits):
    Xs, ys, Xt, yt = _data(digits)
    module = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        module[0].weight.fill_(3e38)  # every hidden unit overflows to inf
    clf = TransferClassifier(tiny_classifier_net(module), head=None, random_state=0)
    # Logits inf - inf: cross-entropy is nan in the first epoch.
    with pytest.raises(ValueError, match=r"became nan in epoch 1 of pretraining"):
        clf.fit_source(Xs, ys)
    assert not hasattr(clf, "_pretrained")


# ------------------------------------------------------------ convergence


def _stopping(patience=10, threshold=1e-4):
    return EarlyStopping(
        monitor="train_loss",
        patience=patience,
        threshold=threshold,
        threshold_mode="abs",
    )


def test_convergence_warning_when_early_stopping_never_triggered(digits):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=3, callbacks=[_stopping()]), random_state=0
    )
    with pytest.warns(ConvergenceWarning, match=r"ran all max_epochs=3") as record:
        clf.fit(Xt, yt)
    assert len(record) == 1
    assert record[0].filename == __file__
    assert len(clf.net_.history) == 3
    # The check is not left behind among the fitted net's callbacks.
    assert not any(isinstance(cb, NonFiniteLoss) for _, cb in clf.net_.callbacks_)
    # None when early stopping triggered, none without early stopping. A
    # threshold no loss can beat stops after patience=1 epoch without gain.
    stopped = tiny_classifier_net(max_epochs=20, callbacks=[_stopping(1, 1e9)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = TransferClassifier(stopped, random_state=0).fit(Xt, yt)
        TransferClassifier(tiny_classifier_net(), random_state=0).fit(Xt, yt)
    assert len(clf.net_.history) == 2


def test_convergence_warning_in_pretraining_too(digits):
    Xs, ys, Xt, yt = _data(digits)
    reg = TransferRegressor(
        tiny_regressor_net(max_epochs=2, callbacks=[_stopping()]), random_state=0
    )
    with pytest.warns(ConvergenceWarning, match=r"Pretraining ran all max_epochs=2"):
        reg.fit_source(Xs, ys.astype(float))


# ------------------------------------------------------------- warm_start


def test_warm_start_continues_from_the_last_fit(digits, starts):
    Xs, ys, Xt, yt = _data(digits)
    for warm_start in (False, True):
        starts.clear()
        clf = TransferClassifier(
            tiny_classifier_net(warm_start=warm_start, callbacks=[Record()]),
            random_state=0,
        )
        clf.fit_source(Xs, ys)
        clf.fit(Xt, yt)
        first_end = _state(clf)
        clf.fit(Xt, yt)
        if warm_start:
            assert equal_weights(starts[-1], first_end)
            assert not equal_weights(_state(clf), first_end)
        else:
            assert equal_weights(starts[-1], starts[-2])


def test_warm_start_with_other_classes_is_an_error(digits):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(tiny_classifier_net(warm_start=True), random_state=0)
    clf.fit(Xt, yt)
    before = clf.net_
    with pytest.raises(ValueError, match=r"warm_start=True continues .*classes_="):
        clf.fit(Xt[yt != 9], yt[yt != 9])
    assert clf.net_ is before


def test_warm_start_l2sp_still_pulls_toward_the_pretrained_weights(digits, starts):
    Xs, ys, Xt, yt = _data(digits)

    class Anchors(Callback):
        seen = []

        def on_train_begin(self, net, **kwargs):
            source = getattr(net.get_loss, "source", None)  # L2-SP's own copies
            if source is not None:
                Anchors.seen.append([source[i] for i in sorted(source)])

    reg = TransferRegressor(
        tiny_regressor_net(warm_start=True, callbacks=[Anchors(), Record()]),
        l2sp=1.0,
        random_state=0,
    )
    reg.fit_source(Xs, ys.astype(float))
    shared = [
        weight
        for name, weight in reg.source_weights_.items()
        if name.startswith("features.")
    ]
    reg.fit(Xt, yt.astype(float))
    first_end = _state(reg)
    reg.fit(Xt, yt.astype(float))
    assert equal_weights(starts[-1], first_end)  # continued, yet:
    assert len(Anchors.seen) == 2
    for anchors in Anchors.seen:
        assert len(anchors) == len(shared)
        assert all(torch.equal(a, w) for a, w in zip(anchors, shared, strict=True))


# ------------------------------------------------------------ partial_fit


def test_partial_fit_is_one_epoch_from_the_current_weights(digits, starts):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=5, callbacks=[Record()]), random_state=0
    )
    clf.fit_source(Xs, ys)
    with pytest.raises(ValueError, match=r"needs classes on the first call"):
        clf.partial_fit(Xt, yt)
    clf.partial_fit(Xt, yt, classes=np.unique(yt))
    # The first call is fit with one epoch, from the pretrained weights.
    one_epoch = clone(clf).set_params(net__max_epochs=1).fit(Xt, yt)
    assert equal_weights(_state(clf), _state(one_epoch))
    assert len(clf.net_.history) == 1
    first_end = _state(clf)
    # Later calls continue, also on batches missing some classes.
    clf.partial_fit(Xt[yt >= 7], yt[yt >= 7])
    assert equal_weights(starts[-1], first_end)
    # The optimizer's state and the history go on, as in MLPClassifier: Adam
    # has taken 2 steps (50 samples, batches of 32) and then 1 (30 samples).
    assert len(clf.net_.history) == 2
    assert {int(s["step"]) for s in clf.net_.optimizer_.state.values()} == {3}
    assert np.array_equal(clf.classes_, np.unique(yt))
    with pytest.raises(ValueError, match=r"not the same as on the first call"):
        clf.partial_fit(Xt, yt, classes=[5, 6])


def test_regressor_partial_fit_continues(digits, starts):
    Xs, ys, Xt, yt = _data(digits)
    reg = TransferRegressor(tiny_regressor_net(callbacks=[Record()]))
    reg.partial_fit(Xt, yt.astype(float))
    first_end = _state(reg)
    reg.partial_fit(Xt, yt.astype(float))
    assert equal_weights(starts[-1], first_end)
    with pytest.raises(ValueError, match=r"X has 32 features"):
        reg.partial_fit(Xt[:, :32], yt.astype(float))


# ------------------------------------------------------- template settings


def test_template_verbose_that_the_estimator_overrides_warns(digits):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(tiny_classifier_net(verbose=2), random_state=0)
    with pytest.warns(UserWarning, match=r"sets verbose=2") as record:
        clf.fit(Xt, yt)
    assert record[0].filename == __file__


def test_template_classes_that_the_label_encoding_overrides_warns(digits):
    Xs, ys, Xt, yt = _data(digits)
    clf = TransferClassifier(tiny_classifier_net(classes=[0, 1]), random_state=0)
    with pytest.warns(UserWarning, match=r"sets classes=\[0, 1\]"):
        clf.fit(Xt, yt)
    assert np.array_equal(clf.classes_, np.unique(yt))
