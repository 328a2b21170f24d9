"""Sample and class weights: checked once, carried with each batch, applied to the loss.

``fit(X, y, sample_weight)`` and ``fit_source(X, y, sample_weight)`` turn the
weights (times the classifier's ``class_weight``) into one float32 array. It
travels with the batches: the net's :class:`~sktransfer.ArrayLoader` gets it
as ``iterator_train__sample_weight`` and slices it with the same indices as
``X`` and ``y``, yielding a :class:`~sktransfer._data.WeightedTarget` in place
of the targets; no per-sample Python work. :class:`WeightedLoss`, the net's
``get_loss`` for the fit, asks the criterion for per-sample losses
(``reduction="none"`` for the call) and reduces them as scikit-learn's
``MLPClassifier`` and ``MLPRegressor`` do: the weighted mean of each batch,
``sum(w * loss) / sum(w)``. Both are installed for one fit only
(:func:`sktransfer._frozen.on_exit`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_sample_weight

from . import _frozen
from ._compat import _check_sample_weight
from ._data import ArrayLoader, WeightedTarget

# The net parameter through which the weights reach the training iterator.
_ITERATOR_PARAM = "iterator_train__sample_weight"


def sample_weights(sample_weight, X, *, class_weight=None, y=None):
    """Return the weight of each sample as float32, or None for equal weights.

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), float or None
        As scikit-learn's ``fit`` takes it (checked by ``_check_sample_weight``:
        finite, non-negative, one per sample; a float is every sample's
        weight).
    X : array-like of shape (n_samples, ...)
        The samples, for their number.
    class_weight : dict, "balanced" or None, default=None
        The classifier's ``class_weight``, multiplied in
        (:func:`sklearn.utils.class_weight.compute_sample_weight`).
    y : ndarray of shape (n_samples,), default=None
        The labels ``class_weight`` refers to.

    Returns
    -------
    weights : ndarray of shape (n_samples,) or None
        None when neither ``sample_weight`` nor ``class_weight`` is given.

    Raises
    ------
    ValueError
        For weights of the wrong shape, negative or non-finite weights, weights
        that are all zero, or a ``class_weight`` dict with labels not in ``y``.
    """
    if sample_weight is None and class_weight is None:
        return None
    n_samples = X.shape[0] if hasattr(X, "shape") else len(X)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight,
            np.empty((n_samples, 0)),
            dtype=np.float64,
            ensure_non_negative=True,
        )
    weights = np.ones(n_samples) if sample_weight is None else sample_weight
    if class_weight is not None:
        weights = weights * compute_sample_weight(class_weight, y)
    if not weights.sum() > 0:
        msg = (
            f"The sample weights sum to {weights.sum()!r}; at least one sample "
            "needs a positive weight to train on."
        )
        raise ValueError(msg)
    return weights.astype(np.float32)


class WeightedLoss:
    """The net's ``get_loss`` made a weighted mean of per-sample losses.

    For a batch whose targets are a :class:`WeightedTarget`, the criterion
    gives per-sample losses ``l`` (``reduction="none"`` for the call; a loss
    of several values per sample, such as ``MSELoss`` on several targets, is
    averaged over them) and the loss is ``sum(w * l) / sum(w)`` over the
    batch, as in scikit-learn's ``MLPClassifier`` / ``MLPRegressor``
    (``np.average(loss, weights=w)`` per mini-batch); a criterion with
    ``reduction="sum"`` gives ``sum(w * l)``. Other targets (validation
    batches) go to the wrapped ``get_loss`` unchanged.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net; its current ``get_loss`` is the one wrapped.
    """

    def __init__(self, net):
        self.net = net
        self.get_loss = net.get_loss

    def __call__(self, y_pred, y_true, X=None, training=False):
        if not isinstance(y_true, WeightedTarget):
            return self.get_loss(y_pred, y_true, X=X, training=training)
        criterion = self.net.criterion_
        reduction = criterion.reduction
        criterion.reduction = "none"
        try:
            loss = self.get_loss(y_pred, y_true.y, X=X, training=training)
        finally:
            criterion.reduction = reduction
        weights = y_true.sample_weight.to(device=loss.device, dtype=loss.dtype)
        if loss.ndim == 0 or loss.shape[0] != len(weights):
            msg = (
                f"sample_weight needs one loss per sample, but criterion "
                f"{type(criterion).__name__} with reduction='none' returned shape "
                f"{tuple(loss.shape)} for a batch of {len(weights)} samples."
            )
            raise ValueError(msg)
        per_sample = loss.reshape(len(weights), -1).mean(dim=1)
        total = (weights * per_sample).sum()
        if reduction == "sum":
            return total
        # A batch whose samples all weigh 0 adds nothing (and no NaN).
        return total / weights.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def check_criterion(net):
    """Raise a ValueError if ``net``'s criterion cannot give per-sample losses."""
    criterion = net.criterion_
    reduction = getattr(criterion, "reduction", None)
    if reduction not in ("mean", "sum"):
        msg = (
            f"sample_weight and class_weight weigh per-sample losses, which "
            f"criterion {type(criterion).__name__} gives only with a 'reduction' "
            f"attribute of 'mean' or 'sum' (as torch's losses have); it has "
            f"reduction={reduction!r}."
        )
        raise ValueError(msg)
    if net.iterator_train is not ArrayLoader:
        msg = (
            f"sample_weight and class_weight travel with the batches of "
            f"sktransfer's ArrayLoader, but the net's iterator_train is "
            f"{getattr(net.iterator_train, '__name__', net.iterator_train)!r}. "
            "Leave iterator_train at its default."
        )
        raise ValueError(msg)


def install(net, weights):
    """Train ``net`` on ``weights`` until the current fit ends; None does nothing.

    The weights are one per row of the data given to ``partial_fit``; with a
    ``ValidSplit``, the training rows keep theirs and the validation loss is
    unweighted.
    """
    if weights is None:
        return
    check_criterion(net)
    # As skorch's set_params stores it (which refuses iterator settings on an
    # initialised net): get_params_for("iterator_train") reads it from there.
    setattr(net, _ITERATOR_PARAM, weights)
    _frozen.on_exit(_remove_weights, net)
    _frozen.wrap_get_loss(net, WeightedLoss(net))


def _remove_weights(net):
    """Forget the weights, so that the fitted net neither keeps nor pickles them."""
    vars(net).pop(_ITERATOR_PARAM, None)
