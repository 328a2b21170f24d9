"""The adaptation terms: free functions of tensors, tested by hand computations.

Deep CORAL (:func:`coral_loss`), multi-kernel MMD (:func:`mmd_loss`), DANN's
gradient reversal and domain classifier (:func:`gradient_reversal`,
:class:`DomainClassifier`, :func:`domain_loss`) and self-training's
pseudo-labels (:func:`pseudo_labels`). :mod:`._adapt_fit` puts them in the
training loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's name)

from .._compat import _NormBase
from .._torch import _held

# The bandwidth multipliers of the multi-kernel MMD: sigma^2 = m * the mean
# squared distance of the batch, m in 2^-2 .. 2^2 (as DAN, Long et al. 2015,
# and TLlib's GaussianKernel(alpha=...) family).
MMD_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)

# The hidden width of DANN's domain classifier.
DOMAIN_HIDDEN = 64


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
    are not used (equal weights). DAN's wider family (bandwidths
    ``2^-8 .. 2^8`` times the base in steps of ``2^(1/2)``, 33 kernels) was no
    more accurate in ``benchmarks/adaptation.py``; pass it as ``multipliers``
    to compare. skada's ``dan_loss`` takes that family with
    ``exp(-||x - x'|| / sigma)`` (the distance, not its square) around the
    median source distance.

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
    that the domains count equally whatever their share of the batch. Ganin
    et al. (JMLR 2016, eq. 18) and skada's ``DANNLoss`` *sum* the two
    means, so this is half their term (``adapt_weight=2`` is their weight 1).
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


def target_statistics(module, X, batch_size, device="cpu"):
    """Recompute the running statistics of ``module``'s normalisation layers on ``X``.

    AdaBN (Li, Wang, Shi, Liu & Hou, "Revisiting batch normalization for
    practical domain adaptation", 2016): every normalisation layer, frozen
    or not, that
    tracks running statistics (``BatchNorm``, ``InstanceNorm`` with
    ``track_running_stats=True``) gets the statistics of the target rows ``X``,
    as the cumulative average over batches of ``batch_size`` rows
    (``momentum=None``), with the other layers in evaluation mode (no
    dropout) and no gradient. Modes and momenta are restored afterwards.

    Parameters
    ----------
    module : torch.nn.Module
    X : torch.Tensor of shape (n_rows, ...)
        The target rows, as the network takes them.
    batch_size : int
    device : str or torch.device, default="cpu"
    """
    norms = [
        layer
        for layer in module.modules()
        if isinstance(layer, _NormBase) and layer.track_running_stats
    ]
    if not norms or len(X) == 0:
        return
    modes = {layer: layer.training for layer in module.modules()}
    momenta = {layer: layer.momentum for layer in norms}
    try:
        module.eval()
        for layer in norms:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        # Frozen layers are held in evaluation mode while fine-tuning; AdaBN
        # recomputes their statistics too, so the holds are lifted here.
        with _held.unheld(module), torch.no_grad():
            for start in range(0, len(X), batch_size):
                module(X[start : start + batch_size].to(device))
    finally:
        for layer, mode in modes.items():
            layer.train(mode)
        for layer, momentum in momenta.items():
            layer.momentum = momentum
