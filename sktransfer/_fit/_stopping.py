"""Choosing the epoch by validation: ``early_stopping``, as ``MLPClassifier`` does.

With ``early_stopping=True``, :meth:`fit` holds out ``validation_fraction`` of
the target data (a split stratified by class for a classifier, skorch's
``ValidSplit``), stops when the validation loss has not improved by 1e-4 for
``n_iter_no_change`` epochs, and restores the weights of the epoch with the
lowest validation loss (skorch's ``EarlyStopping(load_best=True)``). It is the
net's one stopping rule: it replaces any ``EarlyStopping`` of the template,
among them the training-loss one of the default settings. With
``early_stopping=False`` the default settings stop on the training loss after
``n_iter_no_change`` epochs without improvement; a skorch template keeps its
own callbacks.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import clone, is_classifier
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit

from .._common import derive_seed, warn_at_user

# The name of the stopping callback in the fine-tuning net (as in the defaults).
CALLBACK = "early_stopping"

# The smallest improvement of the monitored loss that resets the patience.
_TOL = 1e-4

# The estimators' default n_iter_no_change.
_DEFAULT_PATIENCE = 10


class RestoreBest(EarlyStopping):
    """skorch ``EarlyStopping`` on the validation loss that restores the best epoch.

    The copy of the best weights is dropped once they are restored, so that
    the fitted net does not carry a second network. Safe with the frozen-stage
    cache (``sktransfer_safe``): it copies and restores ``net.module_``, which
    is what trains (the rest of the network when a stage is cached), and has
    no per-batch hook.
    """

    sktransfer_safe = True

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        self.best_model_weights_ = None


def _callbacks(net):
    """Return the template's callbacks as a list (``"disable"``: none)."""
    callbacks = net.callbacks
    return list(callbacks) if isinstance(callbacks, list | tuple) else []


def _is_stopper(item):
    callback = item[1] if isinstance(item, tuple) else item
    return isinstance(callback, EarlyStopping)


def _with_patience(callback, patience):
    callback = clone(callback)
    callback.set_params(patience=patience)  # skorch's returns None
    return callback


def active(estimator):
    """Whether this fit holds out a validation split for ``early_stopping``.

    Not in ``partial_fit``: one epoch per call, as ``MLPClassifier.partial_fit``
    ignores ``early_stopping``.
    """
    return (
        bool(estimator.early_stopping) and getattr(estimator, "_partial", None) is None
    )


def net_params(estimator, net, defaults):
    """Return the skorch settings of the fine-tuning net for ``early_stopping``.

    Parameters
    ----------
    estimator : _BaseTransfer
        The estimator, for ``early_stopping``, ``validation_fraction``,
        ``n_iter_no_change`` and ``random_state``.
    net : skorch.NeuralNet
        The unfitted template.
    defaults : bool
        Whether the template has sktransfer's default settings (``net`` is
        None or a module).
    """
    patience = int(estimator.n_iter_no_change)
    if not active(estimator):
        if not defaults:
            if patience != _DEFAULT_PATIENCE:
                msg = (
                    f"n_iter_no_change={patience} is the patience of "
                    "early_stopping=True and of the default network's stopping, "
                    "but this fit uses the net template's own callbacks "
                    "(early_stopping=False), so it changes nothing. Set "
                    "early_stopping=True, or the patience of the template's "
                    "EarlyStopping."
                )
                warn_at_user(msg, UserWarning)
            return {}
        callbacks = [
            (CALLBACK, _with_patience(item[1], patience))
            if isinstance(item, tuple) and item[0] == CALLBACK and _is_stopper(item)
            else item
            for item in _callbacks(net)
        ]
        return {"callbacks": callbacks}
    random_state = estimator.random_state
    if random_state is not None and not isinstance(random_state, numbers.Integral):
        random_state = derive_seed(random_state)
    split = ValidSplit(
        float(estimator.validation_fraction),
        stratified=is_classifier(estimator),
        random_state=random_state,
    )
    stopper = RestoreBest(
        monitor="valid_loss",
        patience=patience,
        threshold=_TOL,
        threshold_mode="abs",
        load_best=True,
    )
    callbacks = [item for item in _callbacks(net) if not _is_stopper(item)]
    return {"train_split": split, "callbacks": [*callbacks, (CALLBACK, stopper)]}


def check_split(estimator, y_enc, labels=None):
    """Check that the validation split of ``y_enc`` can be made.

    ``labels`` (the labels of the codes in ``y_enc``, when known) names the
    short class in the message.

    Raises
    ------
    ValueError
        When the validation or the training part would have fewer samples
        than there are classes (a stratified split needs one of each), or no
        sample at all.
    """
    if not active(estimator):
        return
    fraction = float(estimator.validation_fraction)
    n_samples = len(y_enc)
    n_valid = math.ceil(fraction * n_samples)
    n_train = n_samples - n_valid
    need = 1
    what = "sample"
    if is_classifier(estimator):
        classes, counts = np.unique(y_enc, return_counts=True)
        need, what = len(classes), f"sample of each of the {len(classes)} classes"
        if counts.min() < 2:
            index = classes[counts.argmin()]
            if labels is not None and 0 <= index < len(labels):
                name = labels[index]
                name = name.item() if isinstance(name, np.generic) else name
                label = f"class {name!r}"
            else:
                label = f"class index {index}"
            msg = (
                f"early_stopping=True splits off a stratified validation set, "
                f"which needs at least 2 samples of every class; {label} has "
                f"{counts.min()}. Set early_stopping=False, or add samples of it."
            )
            raise ValueError(msg)
    if n_valid < need or n_train < need:
        msg = (
            f"early_stopping=True with validation_fraction={fraction!r} holds out "
            f"{n_valid} of {n_samples} samples, leaving {n_train} to train on; "
            f"each part needs at least one {what}. Raise validation_fraction (at "
            f"least {need / n_samples:.3g}), or set early_stopping=False."
        )
        raise ValueError(msg)
