"""Sample and class weights: checked once, carried with each batch, applied to the loss.

``fit(X, y, sample_weight)`` and ``fit_source(X, y, sample_weight)`` turn the
weights (times the classifier's ``class_weight``) into one float32 array. It
travels with the batches: the net's :class:`~sktransfer.ArrayLoader` gets it
as ``iterator_train__sample_weight`` and slices it with the same indices as
``X`` and ``y``, yielding a :class:`~sktransfer._skorch._data.WeightedTarget` in place
of the targets; no per-sample Python work. :class:`WeightedLoss`, the net's
``get_loss`` for the fit, asks the criterion for per-sample losses
(``reduction="none"`` for the call) and reduces them as scikit-learn's
``MLPClassifier`` and ``MLPRegressor`` do: the weighted mean of each batch,
``sum(w * loss) / sum(w)``, normalised as the criterion's own mean is for a
criterion with class weights (``sum(w * loss) / sum(w * weight[y])``, see
:func:`per_sample_losses`), so that equal weights change nothing;
:class:`WeightedValidLoss` weighs the loss of a validation split of the same
rows likewise. All are installed for one fit only
(:func:`sktransfer._skorch._frozen.on_exit`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_sample_weight
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from torch.utils.data import Subset

from .._common import install_callback, warn_at_user
from .._common import reduction as _reduction
from .._compat import _check_sample_weight
from . import _frozen
from ._data import ArrayLoader, WeightedTarget

# The net parameter through which the weights reach the training iterator.
_ITERATOR_PARAM = "iterator_train__sample_weight"

# The name of the weighted validation loss's callback in the fine-tuning net.
_VALID_CALLBACK = "sktransfer_weighted_valid_loss"


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
    if class_weight == "balanced":
        weights = weights * balanced_weights(y, weights)
    elif class_weight is not None:
        weights = weights * compute_sample_weight(class_weight, y)
    if not weights.sum() > 0:
        msg = (
            f"The sample weights sum to {weights.sum()!r}; at least one sample "
            "needs a positive weight to train on."
        )
        raise ValueError(msg)
    return weights.astype(np.float32)


def balanced_weights(y, sample_weight):
    """Return each sample's ``class_weight="balanced"`` weight, from weighted counts.

    ``n / (n_classes * count[c])`` with ``n`` and ``count`` the *weighted*
    number of samples (the sums of ``sample_weight``), as
    :func:`sklearn.utils.class_weight.compute_class_weight` computes it with
    ``sample_weight`` and as ``LogisticRegression`` uses it: a row of weight 0
    counts for nothing. A class all of whose rows weigh 0 gets weight 0 (its
    rows are not trained on either way). Multi-output ``y`` multiplies the
    weights of its columns, as
    :func:`~sklearn.utils.class_weight.compute_sample_weight` does.

    Parameters
    ----------
    y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        The labels.
    sample_weight : ndarray of shape (n_samples,)
        The weight of each sample.

    Returns
    -------
    weights : ndarray of shape (n_samples,), float64
    """
    y = np.asarray(y)
    columns = y.reshape(len(y), -1)
    weights = np.ones(len(y))
    for column in columns.T:
        classes, inverse = np.unique(column, return_inverse=True)
        counts = np.bincount(inverse, weights=sample_weight, minlength=len(classes))
        per_class = np.zeros_like(counts)
        np.divide(counts.sum(), len(classes) * counts, out=per_class, where=counts > 0)
        weights = weights * per_class[inverse]
    return weights


class WeightedLoss:
    """The net's ``get_loss`` made a weighted mean of per-sample losses.

    For a batch whose targets are a :class:`WeightedTarget`, the criterion
    gives per-sample losses ``l`` (``reduction="none"`` for the call; a loss
    of several values per sample, such as ``MSELoss`` on several targets, is
    averaged over them) and the loss is ``sum(w * l) / sum(w)`` over the
    batch, as in scikit-learn's ``MLPClassifier`` / ``MLPRegressor``
    (``np.average(loss, weights=w)`` per mini-batch); a criterion with
    ``reduction="sum"`` gives ``sum(w * l)``. Under ``CrossEntropyLoss`` or
    ``NLLLoss`` with class weights (or ``ignore_index``) on class indices, the
    denominator is ``sum(w * weight[y])``, as torch divides its class-weighted
    mean by ``sum(weight[y])`` (:func:`per_sample_losses`). A batch whose
    weights are all equal and positive gets the criterion's own reduction
    (times the weight for ``"sum"``), so equal weights give bit for bit the
    fit without weights. Other targets (validation batches) go to the wrapped
    ``get_loss`` unchanged.

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
        weights = y_true.sample_weight
        if len(weights) and bool((weights == weights[0]).all()) and weights[0] > 0:
            # Equal weights are no weights: the criterion's own reduction, bit
            # for bit (times the weight under reduction="sum").
            loss = self.get_loss(y_pred, y_true.y, X=X, training=training)
            return loss * weights[0].item() if reduction == "sum" else loss
        with _reduction(criterion, "none"):
            loss = self.get_loss(y_pred, y_true.y, X=X, training=training)
        weights = weights.to(device=loss.device, dtype=loss.dtype)
        if loss.ndim == 0 or loss.shape[0] != len(weights):
            msg = (
                f"sample_weight needs one loss per sample, but criterion "
                f"{type(criterion).__name__} with reduction='none' returned shape "
                f"{tuple(loss.shape)} for a batch of {len(weights)} samples."
            )
            raise ValueError(msg)
        per_sample, norm = per_sample_losses(criterion, loss, y_true.y)
        total = (weights * per_sample).sum()
        if reduction == "sum":
            return total
        # A batch whose samples all weigh 0 adds nothing (and no NaN).
        denominator = (weights * norm).sum()
        return total / denominator.clamp_min(torch.finfo(loss.dtype).tiny)


def per_sample_losses(criterion, loss, y):
    """Return each sample's loss and its share of the criterion's mean reduction.

    For ``loss``, the criterion's output with ``reduction="none"``, returns
    ``(l, d)``, two tensors of shape (n_samples,) such that the criterion's
    own ``reduction="mean"`` is ``sum(l) / sum(d)``; the weighted mean is then
    ``sum(w * l) / sum(w * d)``, which equal weights leave unchanged. For
    ``CrossEntropyLoss`` and ``NLLLoss`` on class indices, ``l`` sums the
    sample's losses (already times ``weight[y]``) and ``d`` is the sum of
    ``weight[y]`` over its targets that are not ``ignore_index``, as torch
    divides by the summed class weights. For any other criterion (and for
    class probabilities as targets, which torch averages over samples), ``l``
    is the mean of the sample's losses and ``d`` is 1.
    """
    n = loss.shape[0]
    flat = loss.reshape(n, -1)
    indexed = (
        isinstance(criterion, (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss))
        and torch.is_tensor(y)
        and not y.is_floating_point()
        and y.numel() == loss.numel()
    )
    if not indexed:
        return flat.mean(dim=1), torch.ones(n, dtype=loss.dtype, device=loss.device)
    targets = y.reshape(n, -1).to(loss.device)
    kept = targets != criterion.ignore_index
    weight = getattr(criterion, "weight", None)
    if weight is None:
        norm = kept.to(loss.dtype)
    else:
        norm = weight.to(loss.device, loss.dtype)[targets.clamp_min(0)] * kept
    return flat.sum(dim=1), norm.sum(dim=1)


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
    validation split of those rows (``early_stopping``, or a template's
    ``ValidSplit``), the training rows keep theirs and the validation loss is
    weighted by the validation rows' (:class:`WeightedValidLoss`).
    """
    if weights is None:
        return
    check_criterion(net)
    # As skorch's set_params stores it (which refuses iterator settings on an
    # initialised net): get_params_for("iterator_train") reads it from there.
    setattr(net, _ITERATOR_PARAM, weights)
    _frozen.on_exit(_remove_weights, net)
    _frozen.wrap_get_loss(net, WeightedLoss(net))
    _install_valid_loss(net, weights)


def _install_valid_loss(net, weights):
    """Put :class:`WeightedValidLoss` right after skorch's default callbacks."""
    defaults = {name for name, _ in net.get_default_callbacks()} - {"print_log"}
    callback = WeightedValidLoss(weights)
    _frozen.on_exit(install_callback(net, _VALID_CALLBACK, callback, after=defaults))


class WeightedValidLoss(Callback):
    """Replace each epoch's ``valid_loss`` by its mean weighted by ``sample_weight``.

    skorch records the validation loss as the mean of the per-sample losses of
    the validation rows; with ``sample_weight`` the training loss is weighted
    (:class:`WeightedLoss`), and so is the loss that chooses the epoch here:
    ``sum(w * l) / sum(w)`` over the validation rows (a criterion with
    ``reduction="sum"`` gives each batch's ``sum(w * l)``, averaged over the
    batches as skorch does), computed from the predictions skorch hands to
    ``on_batch_end``, with no second forward pass. It runs right after
    skorch's default callbacks, so that every later callback
    (``early_stopping``'s, a user's ``EarlyStopping`` or ``LRScheduler`` on
    ``valid_loss``) and the printed table see the weighted value; the
    per-batch records and ``valid_acc`` stay unweighted.

    The validation rows must be a ``Subset`` of the weighted rows (skorch's
    ``ValidSplit``, which ``early_stopping`` uses), read in order; for a
    validation set given separately (``predefined_split``) there are no
    weights and nothing changes. Installed by ``fit`` for one fit only.

    Parameters
    ----------
    weights : ndarray of shape (n_samples,), float32
        One weight per row of the data given to the net's ``partial_fit``.
    """

    # Reads predictions and targets only: no module, no mode, no data path.
    sktransfer_safe = True

    def __init__(self, weights):
        self.weights = weights

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.valid_weights_ = None
        self.batches_ = []
        self.offset_ = 0
        # The validation rows are rows of the weighted data only when both
        # parts are Subsets of one dataset (a split of it), not by length.
        if not (
            isinstance(dataset_valid, Subset)
            and isinstance(dataset_train, Subset)
            and dataset_valid.dataset is dataset_train.dataset
            and not isinstance(dataset_valid.dataset, Subset)
            and len(dataset_valid.dataset) == len(self.weights)
        ):
            return
        if net.get_params_for("iterator_valid").get("shuffle", False):
            msg = (
                "iterator_valid__shuffle=True reads the validation rows in an "
                "order the sample weights cannot follow; the validation loss is "
                "unweighted. Leave iterator_valid__shuffle at False."
            )
            warn_at_user(msg, UserWarning)
            return
        indices = np.asarray(dataset_valid.indices)
        self.valid_weights_ = torch.as_tensor(self.weights[indices])

    def on_batch_end(self, net, batch, training, y_pred=None, **kwargs):
        if training or self.valid_weights_ is None or y_pred is None:
            return
        Xi, yi = unpack_data(batch)
        n = len(yi)
        weights = self.valid_weights_[self.offset_ : self.offset_ + n]
        self.offset_ += n
        criterion = net.criterion_
        with _reduction(criterion, "none"), torch.no_grad():
            loss = net.get_loss(y_pred, yi, X=Xi, training=False)
        per_sample, norm = per_sample_losses(criterion, loss.detach(), yi)
        weights = weights.double()
        self.batches_.append(
            (
                float((weights * per_sample.double().cpu()).sum()),
                float((weights * norm.double().cpu()).sum()),
                n,
            )
        )

    def on_epoch_end(self, net, **kwargs):
        if not getattr(self, "batches_", None):
            return
        total, weight, sizes = (
            np.array(column) for column in zip(*self.batches_, strict=True)
        )
        if net.criterion_.reduction == "sum":
            value = float(np.average(total, weights=sizes))
        elif weight.sum() > 0:
            value = float(total.sum() / weight.sum())
        else:
            if not getattr(self, "warned_", False):
                msg = (
                    "Every validation sample has sample_weight 0, so the weighted "
                    "validation loss is undefined; early stopping and "
                    "history['valid_loss'] use the unweighted validation loss. Give "
                    "some validation samples a positive weight, or a larger "
                    "validation_fraction."
                )
                warn_at_user(msg, UserWarning)
                self.warned_ = True
            return
        history = net.history
        history.record("valid_loss", value)
        earlier = [row["valid_loss"] for row in history[:-1] if "valid_loss" in row]
        if "valid_loss_best" in history[-1]:
            history.record("valid_loss_best", not earlier or value < min(earlier))


def _remove_weights(net):
    """Forget the weights, so that the fitted net neither keeps nor pickles them."""
    vars(net).pop(_ITERATOR_PARAM, None)
