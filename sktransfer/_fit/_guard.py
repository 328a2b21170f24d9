"""A fit is right or it stops: the guards around each of skorch's training calls.

:func:`training` wraps the ``net.partial_fit`` call of ``fit_source``,
``fit`` and ``partial_fit``. Inside it:

- a non-finite training loss stops the fit with a ValueError naming the epoch
  (:class:`NonFiniteLoss`, a skorch callback removed again afterwards);
- a real Ctrl-C (SIGINT) ends the whole call with ``KeyboardInterrupt``, as in
  scikit-learn, although skorch's loop swallows every ``KeyboardInterrupt``
  (its ``EarlyStopping`` stops training by raising one, and still does);
- ``warm_start=True`` in the template continues from the last fit's weights;
- template settings the estimator overrides are warned about;
- training that ran all ``max_epochs`` while early stopping never triggered
  gives a :class:`~sklearn.exceptions.ConvergenceWarning`, as ``MLPClassifier``
  does; so does a training loss that ended more than 100 times its first
  epoch's (:func:`_warn_if_diverged`: divergence with a finite loss).

The estimators decide when to use it; everything installed is undone when the
block ends, normally or not.
"""

from __future__ import annotations

import copy
import inspect
import math
import signal
import threading
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping
from skorch.utils import to_tensor

from .._common import install_callback, warn_at_user
from .._skorch._finetune import L2SPLoss
from .._torch import _hf
from .._torch._probe import evaluating
from ._outputs import SOFTMAX, output_kind
from ._progress import reporting, why_stopped

# The name of the non-finite loss check among the net's callbacks while training.
_NONFINITE_CALLBACK = "sktransfer_nonfinite_loss"


class NonFiniteLoss(Callback):
    """skorch callback: stop with a ValueError when the training loss is not finite.

    It reads the epoch's ``train_loss`` from the history at the end of each
    epoch (one number per epoch, no per-batch synchronisation), after skorch's
    scoring callbacks have written it.

    Parameters
    ----------
    phase : str
        What is being trained, for the message: ``"pretraining"`` or
        ``"fine-tuning"``.
    """

    # It only reads the history, once an epoch (see sktransfer._skorch._safety).
    sktransfer_safe = True

    def __init__(self, phase):
        self.phase = phase

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1].get("train_loss")
        if loss is None or math.isfinite(loss):
            return
        epoch = len(net.history)
        msg = (
            f"The training loss became {loss} in epoch {epoch} of {self.phase}; "
            "the fit is stopped and the estimator left as it was. Likely causes: "
            f"a learning rate too high (lr={net.lr!r}), inputs that are not "
            "scaled or contain extreme values, non-finite values produced by the "
            "network, or a criterion that does not match the module's outputs "
            f"({type(net.criterion_).__name__} on the module's raw output)."
        )
        raise ValueError(msg)


def _overridden(estimator, net):
    """Yield ``(name, value, why)`` for template settings the estimator ignores."""
    defaults = {}
    for cls in reversed(type(net).__mro__):  # subclasses pass the rest as **kwargs
        if "__init__" in vars(cls):
            defaults.update(inspect.signature(cls.__init__).parameters)
    given = net.get_params(deep=False)
    checks = {
        "verbose": (
            int(estimator.verbose),
            f"the estimator's verbose={estimator.verbose!r} is used; set "
            "verbose on the estimator",
        ),
        "classes": (
            None,
            "the classes are those found in y by fit (classes_), and the "
            "partial_fit classes argument",
        ),
    }
    if estimator.verbose:  # set on the estimator: the template's is knowingly replaced
        del checks["verbose"]
    for name, (used, why) in checks.items():
        if name not in defaults or name not in given:
            continue
        value, default = given[name], defaults[name].default
        if _same(value, default) or _same(value, used):
            continue
        yield name, value, why


def _same(a, b):
    try:
        return bool(np.all(a == b)) if a is not None and b is not None else a is b
    except (TypeError, ValueError):
        return False


def check_template(estimator):
    """Warn about each setting of the ``net`` template that the estimator ignores."""
    if not isinstance(estimator.net, NeuralNet):
        return  # the estimator builds the net: nothing of the user's is overridden
    for name, value, why in _overridden(estimator, estimator.net):
        msg = (
            f"The net template sets {name}={value!r}, which "
            f"{type(estimator).__name__} does not use: {why}."
        )
        warn_at_user(msg, UserWarning)


def _continues(estimator, net):
    """Whether this fit continues from the last fit's weights."""
    if not hasattr(estimator, "net_"):
        return False
    return bool(getattr(estimator, "_partial", None) is not None or net.warm_start)


def _check_continuation(estimator, net, sample_shape, fitted):
    """Raise a ValueError when the last fit's weights cannot be continued."""
    name = type(estimator).__name__
    partial = getattr(estimator, "_partial", None) is not None
    how = (
        "partial_fit continues the last fit"
        if partial
        else "warm_start=True continues the last fit's weights"
    )
    restart = (
        f"call fit on a fresh {name} instead" if partial else "set warm_start=False"
    )
    if tuple(sample_shape) != estimator._sample_shape:
        msg = (
            f"{how}, which saw samples of shape {estimator._sample_shape}; got "
            f"samples of shape {tuple(sample_shape)}. Use the same sample shape, "
            f"or {restart}."
        )
        raise ValueError(msg)
    for attr in ("classes_", "n_outputs_"):
        if attr not in fitted or not hasattr(estimator, attr):
            continue
        old, new = getattr(estimator, attr), fitted[attr]
        if not (np.shape(old) == np.shape(new) and np.all(old == new)):
            msg = (
                f"{how}, which had {attr}={old!r}; this y gives {attr}={new!r}. "
                f"Continue with the same {attr}, or {restart}."
            )
            raise ValueError(msg)
    previous = estimator.net_.module_.state_dict()
    trained = [
        pname
        for pname, param in net.module_.named_parameters()
        if not param.requires_grad
        and pname in previous
        and pname not in _unfrozen_later(net)
        and not torch.equal(param.detach().cpu(), previous[pname].detach().cpu())
    ]
    if trained:
        msg = (
            f"{how}, which trained {', '.join(trained)}; frozen={estimator.frozen!r} "
            "freezes them now. Keep frozen as it was for the last fit, or "
            f"{restart}."
        )
        raise ValueError(msg)


def _unfrozen_later(net):
    from .._skorch._finetune import UNFREEZE_CALLBACK

    unfreeze = dict(net.callbacks_).get(UNFREEZE_CALLBACK)
    if unfreeze is None:
        return set()
    return {name for _, names in unfreeze.schedule for name in names}


def _continue_from_last_fit(estimator, net):
    """Load the last fit's weights into ``net.module_``.

    L2-SP keeps pulling toward the pretrained weights: their copies are made
    before loading, also for parameters that an unfreezing schedule trains
    later (L2-SP would otherwise copy those when they unfreeze).
    """
    loss = getattr(net, "get_loss", None)
    if isinstance(loss, L2SPLoss) and loss.alpha:
        later = {
            id(p)
            for n, p in net.module_.named_parameters()
            if n in _unfrozen_later(net)
        }
        for i, param in enumerate(loss.shared):
            if id(param) in later and i not in loss.source:
                loss.source[i] = param.detach().clone()
    net.module_.load_state_dict(estimator.net_.module_.state_dict())
    if getattr(estimator, "_partial", None) is not None:
        _continue_optimizer_and_history(estimator.net_, net)


def _continue_optimizer_and_history(previous, net):
    """``partial_fit``: keep the optimizer's state and the history of the last call.

    As ``MLPClassifier.partial_fit`` keeps its solver's state, so that N calls
    are one run of N epochs (Adam's moments and step count go on). The
    learning rate and other settings are this call's. When the parameter
    groups do not match (another frozen set), the state restarts, with a
    warning.
    """
    options = [
        {key: value for key, value in group.items() if key != "params"}
        for group in net.optimizer_.param_groups
    ]
    try:
        net.optimizer_.load_state_dict(previous.optimizer_.state_dict())
    except ValueError as exc:
        msg = (
            f"partial_fit could not continue the optimizer's state ({exc}); it "
            "restarts for this call."
        )
        warn_at_user(msg, UserWarning)
    else:
        for group, option in zip(net.optimizer_.param_groups, options, strict=True):
            group.update(option)
    net.history_ = copy.deepcopy(previous.history_)


@contextmanager
def _sigint_recorded():
    """Record whether SIGINT arrives inside the block; yield a list that says so.

    The previous handler still runs (Python's default raises
    ``KeyboardInterrupt``, which skorch's loop swallows). Only the main thread
    receives signals: elsewhere, and when SIGINT is ignored or handled by the
    system default, nothing is installed.
    """
    arrived = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield arrived
        return

    def handler(signum, frame):
        arrived.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_finite_outputs(net, probe, what):
    """Raise a ValueError when the trained network's outputs on ``probe`` overflow.

    A diverging fit can keep a finite training loss (growing to 1e32, say)
    while the network's outputs become infinite or NaN, so that probabilities
    are NaN and every prediction is one class. Outputs are judged by what the
    criterion makes of them (:func:`_invalid_rows`: ``-inf`` logits of a
    softmax are classes of probability 0). The network runs once in
    evaluation mode, without gradients; its modes are put back.
    """
    with evaluating(net.module_) as module:
        out = module(to_tensor(probe, device=net.device))
    if not isinstance(out, torch.Tensor) or torch.isfinite(out).all():
        return
    bad = int(_invalid_rows(net, out).sum())
    if not bad:
        return
    losses = [row.get("train_loss") for row in net.history]
    last = next((loss for loss in reversed(losses) if loss is not None), None)
    msg = (
        f"After {what}, the network outputs NaN or infinity on {bad} of "
        f"{len(out)} training samples (last training loss {last}): training "
        "diverged, and its predictions would be meaningless. Likely causes: a "
        f"learning rate too high (lr={net.lr!r}), inputs that are not scaled or "
        "contain extreme values, or no gradient clipping; the estimator is left "
        "as it was."
    )
    raise ValueError(msg)


def _invalid_rows(net, out):
    """Return which samples' outputs ``out`` mean nothing, by the criterion.

    NaN never means anything. Under a softmax criterion (a classifier whose
    ``CrossEntropyLoss`` takes logits or log-probabilities) a logit of
    ``-inf`` is a class of probability 0, such as a class masked as
    impossible, as long as some class of the sample remains possible; ``+inf``
    is not. Under any other criterion every output must be finite.
    """
    rows = out.reshape(len(out), -1)
    if not _softmax_logits(net):
        return (~torch.isfinite(rows)).any(dim=1)
    masked = rows == -math.inf
    return (torch.isnan(rows) | (rows == math.inf)).any(dim=1) | masked.all(dim=1)


def _softmax_logits(net):
    """Whether ``net`` is a classifier whose outputs are logits of a softmax."""
    if not isinstance(net, NeuralNetClassifier):
        return False
    try:
        return output_kind(net.criterion_, net.predict_nonlinearity) == SOFTMAX
    except (TypeError, ValueError):  # criteria of a multilabel y, ...
        return False


def refuse_compile(net):
    """Raise a ValueError for a template with ``compile=True``.

    skorch then wraps ``module_`` in ``torch.compile``'s ``OptimizedModule``,
    whose submodule names (``_orig_mod.``) no longer match the pretrained
    weights, ``head`` or ``frozen``.
    """
    if getattr(net, "compile", False):
        msg = (
            f"The net template has compile={net.compile!r}; sktransfer cannot "
            "yet transfer weights, rebuild the head or freeze parameters through "
            "torch.compile's wrapper (its names start with '_orig_mod.'). Set "
            "compile=False in the template."
        )
        raise ValueError(msg)


# A fit whose last training loss is this many times its first one diverged.
DIVERGENCE_FACTOR = 100.0


def _warn_if_diverged(net, start, what):
    """Warn with a ConvergenceWarning when the training loss grew by 100 times.

    Returns whether it warned.

    The rule: over the epochs of this fit (from ``start`` in the history; all
    the calls so far for ``partial_fit``), with at least two epochs, a first
    training loss ``L_1 > 0`` and a last one ``L_n > 100 * L_1``. A loss
    that starts at or below 0 (a log-likelihood) is not judged. When early
    stopping restored the weights of a best epoch, that epoch is the last one
    judged. Healthy fits,
    short or noisy, stay far from it: the first epoch's loss is that of a
    fresh head, and noise moves a loss by a few times, not a hundred.
    """
    rows = list(net.history[start:])
    # Weights restored from a best epoch (EarlyStopping(load_best=True)) are
    # that epoch's: judge its loss.
    best = [
        cb.best_epoch_
        for _, cb in net.callbacks_
        if isinstance(cb, EarlyStopping) and cb.load_best and cb.best_epoch_
    ]
    if best:
        rows = [row for row in rows if row.get("epoch", 0) <= best[-1]]
    losses = [row.get("train_loss") for row in rows]
    losses = [loss for loss in losses if loss is not None]
    if len(losses) < 2 or not losses[0] > 0:
        return False
    first, last = losses[0], losses[-1]
    if not last > DIVERGENCE_FACTOR * first:
        return False
    lr = net.optimizer_.param_groups[0]["lr"]
    msg = (
        f"{what.capitalize()} diverged: the training loss grew from {first:.4g} "
        f"in its first epoch to {last:.4g} in its last ({len(losses)} epochs), "
        f"more than {DIVERGENCE_FACTOR:g} times; its predictions cannot be "
        "trusted (often no better than chance). Likely causes: a learning rate "
        f"too high (the optimizer's lr={lr!r}), inputs that are not scaled, or "
        "no gradient clipping."
    )
    warn_at_user(msg, ConvergenceWarning)
    return True


def _early_stopping_never_triggered(net, epochs_before):
    """Whether training ran all ``max_epochs`` while an EarlyStopping never fired."""
    stoppers = [cb for _, cb in net.callbacks_ if isinstance(cb, EarlyStopping)]
    return bool(stoppers) and why_stopped(net, epochs_before)[0] == "max_epochs"


@contextmanager
def training(estimator, net, phase, sample_shape=None, fitted=None, probe=None):
    """Guard one training call of ``estimator`` on ``net`` (see the module's notes).

    Parameters
    ----------
    estimator : _BaseTransfer
        The estimator that trains.
    net : skorch.NeuralNet
        Its initialised net for this phase.
    phase : {"source", "target"}
        Pretraining or fine-tuning.
    sample_shape : tuple of int, default=None
        The target's sample shape (fine-tuning), checked against the last fit
        when continuing it.
    fitted : dict, default=None
        The fitted label attributes of this fit (``classes_``, ``n_outputs_``),
        checked against the last fit when continuing it.
    probe : ndarray of shape (n_probe, ...), default=None
        Training samples on which the trained network's outputs must be
        finite (a diverged fit can keep a finite loss while its outputs
        overflow).
    """
    partial = getattr(estimator, "_partial", None) is not None
    check_template(estimator)
    if phase == "target":
        if _continues(estimator, net):
            _check_continuation(estimator, net, sample_shape, fitted or {})
            _continue_from_last_fit(estimator, net)
        if partial:
            net.set_params(max_epochs=1)
    what = "pretraining" if phase == "source" else "fine-tuning"
    remove = install_callback(
        net, _NONFINITE_CALLBACK, NonFiniteLoss(what), after=("train_loss",)
    )
    epochs_before = len(net.history)
    try:
        with (
            reporting(net, what, estimator.verbose, partial),
            _sigint_recorded() as interrupted,
        ):
            yield
        if interrupted:
            raise KeyboardInterrupt
        if probe is not None:
            _check_finite_outputs(net, probe, what)
    finally:
        remove()
    diverged = _warn_if_diverged(net, 0 if partial else epochs_before, what)
    if (
        not partial
        and not diverged
        and _early_stopping_never_triggered(net, epochs_before)
    ):
        # A Hugging Face net has no skorch parameters of its own to set.
        where = (
            "max_epochs"
            if _hf.as_spec(estimator.net) is not None
            else "max_epochs or net__max_epochs"
        )
        msg = (
            f"{what.capitalize()} ran all max_epochs={net.max_epochs} epochs and "
            "early stopping did not trigger: the loss it monitors was still "
            f"improving, so the network may not have converged. Allow more epochs "
            f"({where}, or source_params={{'max_epochs': ...}} for pretraining)."
        )
        warn_at_user(msg, ConvergenceWarning)
