"""Unlabelled target rows: domain adaptation and self-training inside one fit.

``fit(X, y)`` with ``adapt`` set reads scikit-learn's semi-supervised
convention: rows with ``y == -1`` (:class:`~sktransfer.TransferClassifier`, as
:class:`~sklearn.semi_supervised.SelfTrainingClassifier`) or with NaN targets
(:class:`~sktransfer.TransferRegressor`) are unlabelled. The labelled rows are
the source domain (typically a sample of the rows :meth:`fit_source` learnt
from, with their labels), the unlabelled rows the target domain. Both travel
in the same shuffled batches, so that no domain marker is needed anywhere and
scikit-learn's splitters divide both kinds of row between folds (a
``StratifiedKFold`` stratifies on ``-1`` as on any label).

Everything is installed on the skorch net for one fit, through the package's
one training-time scope (:func:`sktransfer._skorch._frozen.on_exit`):

- :class:`LayerFeatures`, a forward hook at ``adapt_layer`` (by default a
  forward pre-hook on the head: its input), which keeps the batch's features;
- :class:`AdaptLoss`, the net's ``get_loss`` wrapper: the supervised loss of
  the labelled rows only (the unlabelled rows never reach it; their encoded
  targets are ``-1`` or NaN), plus ``adapt_weight`` times the adaptation term
  between the labelled and unlabelled rows' features;
- for DANN, a :class:`DomainClassifier` whose parameters join the net's
  optimizer as one more parameter group, removed when fit ends.

The terms are free functions of tensors (:func:`coral_loss`,
:func:`mmd_loss`, :func:`domain_loss`, :func:`pseudo_labels`), tested
against hand computations.

Normalisation layers see mixed batches: their statistics are shared between
the domains, not kept per domain (AdaBN, Li et al. 2016), because prediction
takes no domain marker; running statistics then describe the mix of the
training rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's name)

from .._common import warn_at_user
from .._compat import _safe_indexing
from .._torch import _layers
from . import _frozen
from ._data import WeightedTarget

METHODS = ("coral", "mmd", "dann", "self_training")

# The bandwidth multipliers of the multi-kernel MMD: sigma^2 = m * the mean
# squared distance of the batch, m in 2^-2 .. 2^2 (as DAN, Long et al. 2015,
# and TLlib's GaussianKernel(alpha=...) family).
MMD_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)

# The hidden width of DANN's domain classifier.
DOMAIN_HIDDEN = 64


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
            "probabilities. Use adapt='coral', 'mmd' or 'dann'."
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
        "to one of 'coral', 'mmd', 'dann' or 'self_training'."
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
                    "'mmd' or 'dann'); otherwise drop those rows or fill them."
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
    return _safe_indexing(X, keep), np.asarray(y)[keep], sample_weight


def batch_unlabelled(y_true):
    """Return which rows of a batch's encoded targets are unlabelled (bool tensor)."""
    y = y_true.y if isinstance(y_true, WeightedTarget) else y_true
    if y.is_floating_point():
        return torch.isnan(y.reshape(len(y), -1)).all(dim=1)
    return y.reshape(len(y), -1)[:, 0] < 0


def _rows(y_true, mask):
    if isinstance(y_true, WeightedTarget):
        return WeightedTarget(y_true.y[mask], y_true.sample_weight[mask])
    return y_true[mask]


# ------------------------------------------------------------------ the terms


def coral_loss(source, target):
    """Return the CORAL distance of two batches of features (Sun & Saenko 2016).

    ``||C_s - C_t||_F^2 / (4 d^2)``, with ``C`` the unbiased covariance of
    each batch's ``d`` features (Deep CORAL, Sun & Saenko, ECCV 2016
    workshops, eq. 1).

    Parameters
    ----------
    source, target : torch.Tensor of shape (n_source, d) and (n_target, d)
        At least 2 rows each.

    Returns
    -------
    loss : torch.Tensor, scalar
    """
    d = source.shape[1]
    c_s = torch.cov(source.T)
    c_t = torch.cov(target.T)
    return ((c_s - c_t) ** 2).sum() / (4 * d * d)


def mmd_loss(source, target, multipliers=MMD_MULTIPLIERS):
    """Return the multi-kernel MMD² of two batches of features (DAN).

    The biased (V-statistic) estimate
    ``mean(K_ss) + mean(K_tt) - 2 mean(K_st)`` with ``K`` the sum of Gaussian
    kernels ``exp(-||x - x'||^2 / (2 sigma_k^2))``, ``sigma_k^2 = m_k * D``,
    ``D`` the mean squared distance between all rows of both batches
    (detached) and ``m_k`` in ``multipliers``: the multi-kernel MMD of DAN
    (Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015) with the bandwidth family of TLlib's
    ``GaussianKernel``; DAN's linear-time estimate and learnt kernel weights
    are not used (equal weights).

    Parameters
    ----------
    source, target : torch.Tensor of shape (n_source, d) and (n_target, d)
    multipliers : sequence of float, default=(0.25, 0.5, 1, 2, 4)

    Returns
    -------
    loss : torch.Tensor, scalar
    """
    n = source.shape[0]
    rows = torch.cat([source, target])
    distances = torch.cdist(rows, rows).pow(2)
    base = distances.detach().mean().clamp_min(torch.finfo(rows.dtype).tiny)
    kernel = sum(torch.exp(-distances / (2 * m * base)) for m in multipliers)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


class _GradientReversal(torch.autograd.Function):
    """Identity forward; gradient times ``-coefficient`` backward (Ganin et al.)."""

    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


def gradient_reversal(x, coefficient=1.0):
    """Return ``x``; in the backward pass, its gradient times ``-coefficient``."""
    return _GradientReversal.apply(x, coefficient)


class DomainClassifier(nn.Module):
    """DANN's domain classifier: gradient reversal, then an MLP with one logit.

    ``Linear(d, hidden) → ReLU → Linear(hidden, 1)`` on reversed features; the
    logit is the target domain's, trained with ``BCEWithLogitsLoss``
    (:func:`domain_loss`). The layer before it therefore learns to *confuse*
    it (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR
    2016).

    Parameters
    ----------
    n_features : int
        The width of the features at ``adapt_layer``.
    hidden : int, default=64
        The hidden width.
    """

    def __init__(self, n_features, hidden=DOMAIN_HIDDEN):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, features, reverse=True):
        if reverse:
            features = gradient_reversal(features)
        return self.layers(features).squeeze(1)


def domain_loss(logits_source, logits_target):
    """Return DANN's domain loss: balanced binary cross-entropy on the logits.

    The mean of ``BCEWithLogits(logits_source, 0)`` and
    ``BCEWithLogits(logits_target, 1)``, each a mean over its own rows, so
    that the domains count equally whatever their share of the batch.
    """
    zeros = torch.zeros_like(logits_source)
    ones = torch.ones_like(logits_target)
    return (
        F.binary_cross_entropy_with_logits(logits_source, zeros)
        + F.binary_cross_entropy_with_logits(logits_target, ones)
    ) / 2


def pseudo_labels(probabilities, threshold):
    """Return the pseudo-labels of the rows whose top probability reaches ``threshold``.

    As :class:`~sklearn.semi_supervised.SelfTrainingClassifier` with
    ``criterion="threshold"``: a row is labelled with its most probable
    class when that probability is at least ``threshold``.

    Parameters
    ----------
    probabilities : torch.Tensor of shape (n_rows, n_classes)
    threshold : float

    Returns
    -------
    labels : torch.Tensor of int64, shape (n_confident,)
    confident : torch.Tensor of bool, shape (n_rows,)
    """
    top, labels = probabilities.detach().max(dim=1)
    confident = top >= threshold
    return labels[confident], confident


# ------------------------------------------------------------ the fit's pieces


def check_layer(module, adapt_layer):
    """Return the submodule ``adapt_layer`` names; a ValueError names near ones."""
    modules = dict(module.named_modules())
    if adapt_layer in modules and adapt_layer != "":
        return modules[adapt_layer]
    candidates = [name for name in modules if name]
    msg = (
        f"adapt_layer={adapt_layer!r} is not a submodule of "
        f"{type(module).__name__}.{_layers._nearest(str(adapt_layer), candidates)} "
        f"Submodules are: {_layers._listing(candidates)}."
    )
    raise ValueError(msg)


class LayerFeatures:
    """A forward hook that keeps the features of the last batch at one layer.

    The output of the submodule ``adapt_layer`` names, or with
    ``adapt_layer=None`` the input of the head's first submodule to run (a
    forward pre-hook, as ``transform`` reads it); flattened to one row per
    sample. Removed when fit ends.
    """

    def __init__(self, module, adapt_layer, head, roots=()):
        self.features = None
        if adapt_layer is None:
            if not head:
                msg = (
                    "adapt_layer=None aligns the head's input, but head=None: the "
                    "network has no head. Name the layer with adapt_layer=..."
                )
                raise ValueError(msg)
            self.layers = [module.get_submodule(name) for name in head]
            self.handles = [
                layer.register_forward_pre_hook(self._record_input)
                for layer in self.layers
            ]
        else:
            self.layers = [check_layer(module, adapt_layer)]
            self.handles = [self.layers[0].register_forward_hook(self._record_output)]
        self.where = "the head's input" if adapt_layer is None else repr(adapt_layer)
        self.first_only = adapt_layer is None
        # Each forward pass of the network starts afresh (not with a stale
        # batch's features from a prediction made by a callback).
        self.handles += [
            root.register_forward_pre_hook(self._forget) for root in (module, *roots)
        ]

    def _forget(self, _module, _args):
        self.features = None

    def _record_input(self, _module, args):
        if self.first_only and self.features is not None:
            return  # a head of several submodules: the first one's input
        self._keep(args[0] if args else None)

    def _record_output(self, _module, _args, output):
        self._keep(output[0] if isinstance(output, (tuple, list)) else output)

    def _keep(self, value):
        if not torch.is_tensor(value):
            msg = f"adapt needs one tensor at {self.where}; got {type(value).__name__}."
            raise TypeError(msg)
        self.features = value.flatten(1)

    def take(self):
        """Return the features of the batch just run, and forget them."""
        features, self.features = self.features, None
        return features

    def remove(self):
        for handle in self.handles:
            handle.remove()


class AdaptLoss:
    """The net's ``get_loss`` for rows of which some are unlabelled.

    The wrapped ``get_loss`` (the criterion, sample weights) sees the labelled
    rows only; while training, ``weight`` times the adaptation term between
    the labelled and the unlabelled rows of the batch is added. A batch with
    too few rows of either kind for the term (2 each for CORAL, 1 for the
    others) adds nothing.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net; its current ``get_loss`` is the one wrapped.
    method : {"coral", "mmd", "dann", "self_training"}
    weight : float
        ``adapt_weight``.
    features : LayerFeatures
        The hook at ``adapt_layer``.
    threshold : float
        ``adapt_threshold``, for self-training.
    """

    # Changes no module's mode (for the lean step).
    _sktransfer_step_safe = True

    def __init__(self, net, method, weight, features, threshold):
        self.net = net
        self.get_loss = net.get_loss
        self.method = method
        self.weight = weight
        self.features = features
        self.threshold = threshold
        self.domain_classifier = None
        self.last_term = None

    def __call__(self, y_pred, y_true, X=None, training=False):
        if not torch.is_tensor(y_pred):
            msg = (
                f"adapt={self.method!r} needs the module's output to be one tensor; "
                f"got {type(y_pred).__name__}."
            )
            raise TypeError(msg)
        unlabelled = batch_unlabelled(y_true).to(y_pred.device)
        labelled = ~unlabelled
        per_sample = getattr(self.net.criterion_, "reduction", None) == "none"
        if labelled.any():
            loss = self.get_loss(
                y_pred[labelled], _rows(y_true, labelled), X=X, training=training
            )
        else:
            loss = y_pred.sum() * 0.0  # keeps the graph; nothing supervised
        if per_sample:  # asked for one loss per row: 0 for the unlabelled ones
            rest = tuple(loss.shape[1:]) if loss.ndim else ()
            full = loss.new_zeros((len(labelled), *rest))
            if labelled.any():
                full[labelled] = loss
            loss = full
        features = self.features.take()
        if not training:
            return loss
        if features is None:
            msg = (
                f"adapt_layer={self.features.where} did not run while training: "
                "it lies in the frozen stage whose outputs are cached. Set "
                "cache_frozen=False, or choose a layer after the frozen ones."
            )
            raise ValueError(msg)
        term = self.term(features, y_pred, labelled, unlabelled)
        self.last_term = None if term is None else float(term.detach())
        return loss if term is None else loss + self.weight * term

    def term(self, features, y_pred, labelled, unlabelled):
        """Return the adaptation term of one training batch (None: nothing)."""
        n_l, n_u = int(labelled.sum()), int(unlabelled.sum())
        if self.method == "self_training":
            return self._pseudo_label_term(y_pred[unlabelled]) if n_u else None
        source, target = features[labelled], features[unlabelled]
        if self.method == "coral":
            return coral_loss(source, target) if min(n_l, n_u) >= 2 else None
        if min(n_l, n_u) < 1:
            return None
        if self.method == "mmd":
            return mmd_loss(source, target)
        classifier = self._domain_classifier(features)
        return domain_loss(classifier(source), classifier(target))

    def _pseudo_label_term(self, outputs):
        criterion = self.net.criterion_
        if isinstance(criterion, nn.CrossEntropyLoss):
            probabilities = outputs.softmax(dim=1)
        elif isinstance(criterion, nn.NLLLoss):
            probabilities = outputs  # skorch's convention: the module's softmax
        else:
            msg = (
                "adapt='self_training' reads class probabilities from the outputs "
                "of a network trained with CrossEntropyLoss or NLLLoss; the "
                f"criterion is {type(criterion).__name__}."
            )
            raise ValueError(msg)
        labels, confident = pseudo_labels(probabilities, self.threshold)
        if not confident.any():
            return None
        loss = self.get_loss(outputs[confident], labels, training=True)
        # The mean over the batch's unlabelled rows, unconfident ones adding 0.
        return loss * (confident.sum() / len(confident))

    def _domain_classifier(self, features):
        """DANN's domain classifier, built on the first batch, in the optimizer."""
        classifier = self.domain_classifier
        if classifier is None:
            classifier = DomainClassifier(features.shape[1]).to(features.device)
            self.domain_classifier = classifier
        optimizer = self.net.optimizer_
        first = next(classifier.parameters())
        if not any(
            p is first for group in optimizer.param_groups for p in group["params"]
        ):
            # Added again after a schedule rebuilds the optimizer.
            optimizer.add_param_group({"params": list(classifier.parameters())})
            _frozen.on_exit(_drop_group, self.net, classifier)
        return classifier


def _drop_group(net, classifier):
    """Take the domain classifier's parameter group out of the net's optimizer."""
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is None:
        return
    params = {id(p) for p in classifier.parameters()}
    optimizer.param_groups[:] = [
        group
        for group in optimizer.param_groups
        if not any(id(p) in params for p in group["params"])
    ]
    for param in classifier.parameters():
        optimizer.state.pop(param, None)


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
    return loss
