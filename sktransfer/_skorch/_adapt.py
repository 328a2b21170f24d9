"""Unlabelled target rows: domain adaptation and self-training inside one fit.

``fit(X, y)`` with ``adapt`` set reads scikit-learn's semi-supervised
convention: rows with ``y == -1`` (:class:`~sktransfer.TransferClassifier`, as
:class:`~sklearn.semi_supervised.SelfTrainingClassifier`) or with NaN targets
(:class:`~sktransfer.TransferRegressor`) are unlabelled. The labelled rows are
the source domain (typically a sample of the rows :meth:`fit_source` learnt
from, with their labels), the unlabelled rows the target domain. Both travel
in every training batch (:class:`DomainBalancedLoader`), so that no domain
marker is needed anywhere and scikit-learn's splitters divide both kinds of
row between folds (a ``StratifiedKFold`` stratifies on ``-1`` as on any
label).

Everything else is installed on the skorch net for one fit, through the
package's one training-time scope (:func:`sktransfer._skorch._frozen.on_exit`),
by :func:`install`: the domain-balanced batches, the labelled validation
split, the hook at ``adapt_layer`` and the loss (:mod:`._adapt_fit`); the
terms themselves are free functions of tensors (:mod:`._adapt_terms`).

Normalisation layers see mixed batches, source and target rows together, as
TLlib's DANN, DAN and CORAL implementations concatenate the two domains'
batches: their batch statistics are shared between the domains, not kept per
domain, and their running statistics, which prediction uses, are those of
the mix of training rows (prediction takes no domain marker to choose
per-domain statistics by). ``adapt="adabn"`` instead gives them the
unlabelled rows' statistics when training ends (AdaBN, Li et al. 2016), for
a network that will predict on the target domain.
"""

from __future__ import annotations

import numpy as np

from .._common import install_callback, take_rows, warn_at_user
from .._compat import _NormBase
from . import _frozen
from ._adapt_fit import (
    AdaptLoss,
    DomainBalancedLoader,
    LayerFeatures,
    TargetStatistics,
    check_iterator,
    labelled_validation,
)

METHODS = ("coral", "mmd", "dann", "self_training", "adabn")

# ----------------------------------------------------------- labels and rows


def unlabelled_rows(y, *, regression):
    """Return which rows of ``y`` are unlabelled: -1 (classes) or NaN (targets).

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Labels or targets as given to ``fit``.
    regression : bool
        NaN marks unlabelled rows (every target of the row NaN) when true,
        ``-1`` otherwise.

    Returns
    -------
    mask : ndarray of bool, shape (n_samples,)

    Raises
    ------
    ValueError
        For a regression row with some targets NaN and others not.
    """
    y = np.asarray(y)
    if regression:
        if y.dtype.kind not in "fc":
            return np.zeros(len(y), dtype=bool)
        nan = np.isnan(y.reshape(len(y), -1))
        partial = nan.any(axis=1) & ~nan.all(axis=1)
        if partial.any():
            msg = (
                f"Row {int(np.flatnonzero(partial)[0])} of y has some targets NaN "
                "and others not; NaN marks an unlabelled row, whose targets are all "
                "NaN."
            )
            raise ValueError(msg)
        return nan.all(axis=1)
    if y.ndim != 1:
        msg = (
            "adapt reads y == -1 as unlabelled rows in a y of shape (n_samples,); "
            f"got a y of shape {y.shape} (multilabel y is not supported with "
            "adapt)."
        )
        raise ValueError(msg)
    if y.dtype.kind in "iuf":
        return y == -1
    return np.array([_is_minus_one(value) for value in y], dtype=bool)


def _is_minus_one(value):
    try:
        return bool(value == -1) and not isinstance(value, (str, bytes))
    except (TypeError, ValueError):
        return False


def check_rows(estimator, unlabelled):
    """Raise a ValueError unless both labelled and unlabelled rows are present."""
    n_unlabelled = int(unlabelled.sum())
    marker = "NaN" if estimator._output_kind == "outputs" else "-1"
    if n_unlabelled == len(unlabelled):
        msg = (
            f"adapt={estimator.adapt!r} needs labelled rows (the source's, with "
            f"their labels) beside the unlabelled ones; every row of y is "
            f"{marker}. Pass a sample of the source rows with their labels."
        )
        raise ValueError(msg)
    if n_unlabelled == 0:
        msg = (
            f"adapt={estimator.adapt!r} aligns labelled rows with unlabelled "
            f"(target) rows, marked by y == {marker}; y has none. Add the "
            "unlabelled target rows with that marker, or set adapt=None."
        )
        raise ValueError(msg)


def check_settings(estimator):
    """Raise a ValueError for settings that ``adapt`` cannot honour."""
    owner = type(estimator).__name__
    if estimator.adapt == "self_training" and estimator._output_kind == "outputs":
        msg = (
            f"adapt='self_training' pseudo-labels rows whose predicted class "
            f"probability reaches adapt_threshold; {owner} predicts no "
            "probabilities. Use adapt='coral', 'mmd', 'dann' or 'adabn'."
        )
        raise ValueError(msg)
    if estimator.mixup_alpha or estimator.cutmix_alpha:
        msg = (
            f"adapt={estimator.adapt!r} with mixup_alpha={estimator.mixup_alpha!r} "
            f"and cutmix_alpha={estimator.cutmix_alpha!r}: MixUp and CutMix mix "
            "labelled with unlabelled rows. Set both to 0 with adapt."
        )
        raise ValueError(msg)
    if getattr(estimator, "_partial", None) is not None:
        msg = (
            f"adapt={estimator.adapt!r} trains with fit; partial_fit does not "
            "adapt. Call fit, or set adapt=None."
        )
        raise ValueError(msg)


def warn_minus_one_class(estimator, y):
    """Warn when ``adapt=None`` trains ``-1`` as a class beside 0-based labels.

    ``-1`` is an ordinary label for every supervised scikit-learn classifier
    (labels ``{-1, 1}`` are common), so ``adapt=None`` keeps it a class; but
    ``-1`` among the labels 0, 1, ... is scikit-learn's unlabelled marker,
    which only ``adapt`` reads.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or not (y == -1).any():
        return
    if not (y == 0).any():
        return
    msg = (
        f"y holds -1 beside the labels 0, 1, ...: with adapt=None, "
        f"{type(estimator).__name__} trains -1 as a class of its own. If -1 marks "
        "unlabelled rows (scikit-learn's semi-supervised convention), set adapt "
        "to one of 'coral', 'mmd', 'dann', 'self_training' or 'adabn'."
    )
    warn_at_user(msg, UserWarning)


def split_rows(estimator, y):
    """Return ``y`` with its unlabelled rows filled, and which rows they are.

    With ``adapt=None`` nothing changes (``None`` for the rows); the
    classifier warns where ``-1`` looks like the unlabelled marker
    (:func:`warn_minus_one_class`). With ``adapt`` set, the unlabelled rows
    get a labelled row's value, so that ``validate_data`` checks ``y`` as
    usual; ``fit`` encodes the labelled rows only.
    """
    regression = estimator._output_kind == "outputs"
    if estimator.adapt is None:
        if not regression:
            warn_minus_one_class(estimator, y)
        elif y is not None:
            values = np.asarray(y)
            if values.dtype.kind == "f" and np.isnan(values).any():
                rows = np.isnan(values).reshape(len(values), -1).any(axis=1)
                msg = (
                    f"y has {int(rows.sum())} "
                    "rows with NaN targets, which a regressor cannot fit. NaN "
                    "marks unlabelled rows only with adapt set (adapt='coral', "
                    "'mmd', 'dann' or 'adabn'); otherwise drop those rows or fill "
                    "them."
                )
                raise ValueError(msg)
        return y, None
    check_settings(estimator)
    if y is None:
        return y, None  # validate_data says y is required
    unlabelled = unlabelled_rows(y, regression=regression)
    check_rows(estimator, unlabelled)
    y = np.array(y, copy=True)
    y[unlabelled] = y[~unlabelled][0]
    return y, unlabelled


def labelled_weights(estimator, sample_weight, X, y, unlabelled):
    """Return the training weights of every row; the labelled rows' decide.

    ``sample_weight`` and the classifier's ``class_weight`` are computed over
    the labelled rows (``class_weight="balanced"`` balances their classes);
    the unlabelled rows get weight 0: no supervised loss, not even the
    weighted validation loss of a split, counts them.
    """
    labelled = ~unlabelled
    if np.ndim(sample_weight) == 1 and len(sample_weight) == len(unlabelled):
        sample_weight = np.asarray(sample_weight)[labelled]
    weights = estimator._sample_weights(sample_weight, X[labelled], y[labelled])
    if weights is None:
        return None
    out = np.zeros(len(unlabelled), dtype=weights.dtype)
    out[labelled] = weights
    return out


def with_unlabelled(y_enc, unlabelled):
    """Return the encoded targets of every row, the unlabelled ones marked.

    ``y_enc`` holds the labelled rows' encoded targets; the unlabelled rows
    get ``-1`` (class indices) or NaN (float targets), which :class:`AdaptLoss`
    keeps away from the supervised loss.
    """
    shape = (len(unlabelled), *y_enc.shape[1:])
    fill = -1 if y_enc.dtype.kind in "iu" else np.nan
    out = np.full(shape, fill, dtype=y_enc.dtype)
    out[~unlabelled] = y_enc
    return out


def labelled_for_score(estimator, X, y, sample_weight):
    """Return the labelled rows of ``X``, ``y`` and ``sample_weight`` for ``score``.

    With ``adapt=None`` every row; with ``adapt`` set, the rows that are not
    marked unlabelled (a ``score`` on them would compare predictions with
    the marker).

    Raises
    ------
    ValueError
        When every row is unlabelled.
    """
    if estimator.adapt is None or y is None:
        return X, y, sample_weight
    regression = estimator._output_kind == "outputs"
    unlabelled = unlabelled_rows(y, regression=regression)
    if unlabelled.all():
        marker = "NaN" if regression else "-1"
        msg = (
            f"score compares predictions with labels, but every row of y is "
            f"{marker} (unlabelled). Score unlabelled rows with an unsupervised "
            "scorer, e.g. scoring=sktransfer.prediction_entropy_scorer."
        )
        raise ValueError(msg)
    keep = np.flatnonzero(~unlabelled)
    if sample_weight is not None and np.ndim(sample_weight) == 1:
        sample_weight = np.asarray(sample_weight)[keep]
    return take_rows(X, keep), np.asarray(y)[keep], sample_weight


def install(estimator, net, head, split=None):
    """Adapt ``net``'s training to the unlabelled rows until the fit ends.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        Its ``adapt``, ``adapt_weight``, ``adapt_layer`` and
        ``adapt_threshold``.
    net : skorch.NeuralNet
        The initialised net.
    head : sequence of str
        The head's submodule names (``adapt_layer=None`` hooks its input).
    split : FrozenStage or None
        The cached frozen stage, if any: ``adapt_layer`` must lie after it.

    Returns
    -------
    loss : AdaptLoss
        The net's ``get_loss`` for the fit.
    """
    check_iterator(net)
    module = net.module_
    rest = getattr(split, "rest", None)
    roots = () if rest is None else (rest,)
    features = LayerFeatures(module, estimator.adapt_layer, head, roots)
    _frozen.on_exit(features.remove)
    if rest is not None and not any(
        layer is sub for layer in features.layers for sub in rest.modules()
    ):
        features.remove()
        msg = (
            f"adapt_layer={features.where} lies in the frozen stage whose outputs "
            "fit caches, so it never runs while training. Set cache_frozen=False, "
            "or choose a layer after the frozen ones."
        )
        raise ValueError(msg)
    loss = AdaptLoss(
        net,
        estimator.adapt,
        estimator.adapt_weight,
        features,
        estimator.adapt_threshold,
    )
    _frozen.wrap_get_loss(net, loss)
    _use_balanced_batches(net)
    labelled_validation(net)
    if estimator.adapt == "adabn":
        stage = getattr(split, "stage", None)
        in_stage = [] if stage is None else _tracking_norms(stage)
        if in_stage:
            msg = (
                "adapt='adabn' recomputes the statistics of every normalisation "
                f"layer on the unlabelled rows, frozen ones too ({in_stage[0]} "
                "lies in the frozen stage), but fit caches that stage's outputs "
                "from the pretrained statistics. Set cache_frozen=False."
            )
            raise ValueError(msg)
        if not _tracking_norms(module):
            warn_at_user(
                "adapt='adabn' cannot act: the network has no normalisation layer "
                "that tracks running statistics (BatchNorm, or InstanceNorm with "
                "track_running_stats=True; LayerNorm and GroupNorm keep none), so "
                "the fit equals adapt=None on the labelled rows."
            )
        if estimator.adapt_weight != 1.0:
            # A grid over adapt_weight with AdaBN fits the same model at every
            # weight, and adaptation_refit would read weight 0 as "no
            # adaptation" when the grid does not name adapt.
            warn_at_user(
                f"adapt_weight={estimator.adapt_weight!r} has no effect with "
                "adapt='adabn', which weighs no term: the statistics are the "
                "unlabelled rows' at any weight. For no adaptation, set "
                "adapt=None."
            )
        _frozen.on_exit(
            install_callback(net, "adapt_target_statistics", TargetStatistics())
        )
    return loss


def _tracking_norms(module):
    """Return the names of ``module``'s layers that keep running statistics."""
    return [
        name or type(layer).__name__
        for name, layer in module.named_modules()
        if isinstance(layer, _NormBase) and layer.track_running_stats
    ]


def _use_balanced_batches(net):
    """Make the net's training batches domain-balanced until the fit ends."""
    own = net.iterator_train
    net.iterator_train = DomainBalancedLoader

    def undo():
        net.iterator_train = own

    _frozen.on_exit(undo)
