"""Regression targets on any scale: ``normalize_y`` of :class:`TransferRegressor`.

A network trained with ``MSELoss`` from small initial weights fits targets of
unit scale; targets in the hundreds (diabetes: 25 to 346) leave Adam far from
a fit after the default epochs. As ``GaussianProcessRegressor(normalize_y=True)``
does, each task's targets are standardised with that task's own mean and
standard deviation (per target, computed in float64, weighted by
``sample_weight``: a row of weight 0 changes neither) before they reach the
loss, and predictions are mapped back. Pretraining uses the source's
statistics and fine-tuning the target's; only the target's are kept, as
``fit`` needs them for ``predict``. A target without spread gets scale 1.

Standardising is right only when the loss and the output can follow it: a
loss that is location- and scale-equivariant (:data:`EQUIVARIANT_LOSSES`) on
an output that is not bounded on either side. :func:`bounding_operation`
reads the bound from the network itself: the last operation that makes its
output on the first training rows (the autograd graph, through reshapes and
constant shifts and factors) is a bounded activation (ReLU, Softplus,
Sigmoid, Tanh, ``torch.exp``, ...). :func:`check_scaling` decides.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch.utils import to_tensor
from torch import nn
from torch.utils.data import Dataset

from .._torch._probe import modes_restored

# Losses that standardised targets leave the same problem: L(a*y + b, a*t + b)
# is a fixed multiple of L(y, t) (SmoothL1 and Huber up to their threshold).
EQUIVARIANT_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)

# Autograd nodes that only move values around (shape, copy, device, dtype).
_RESHAPES = frozenset(
    (
        "View Reshape ReshapeAlias UnsafeView Squeeze Unsqueeze Clone Permute "
        "Transpose T Expand Select Slice ToCopy Alias Flatten Index Cat Stack "
        "Contiguous UnsafeSplit Split SplitWithSizes Unbind"
    ).split()
)
# Autograd nodes that shift, scale or negate one input by constants.
_AFFINE = frozenset("Add Sub Rsub Mul Div Neg".split())
# Autograd nodes of operations whose outputs are bounded on at least one side.
_BOUNDED = frozenset(
    (
        "Relu Softplus Sigmoid Tanh Exp Exp2 Expm1 Abs Clamp ClampMin ClampMax "
        "Hardtanh Hardsigmoid Elu Gelu Silu Mish Hardswish Threshold Softmax "
        "LogSoftmax LogSigmoid Sqrt Sin Cos Erf Erfc Atan Cosh Softmin"
    ).split()
)


def statistics(y2d, normalize, sample_weight=None):
    """Return the mean and scale that standardise each column of ``y2d``.

    Both are float64 arrays of shape (n_outputs,); the identity (0 and 1)
    when ``normalize`` is false. With ``sample_weight``, the weighted mean
    ``sum(w * y) / sum(w)`` and the weighted standard deviation
    ``sqrt(sum(w * (y - mean) ** 2) / sum(w))`` (as ``StandardScaler`` with
    ``sample_weight``); a row of weight 0 contributes exactly nothing.
    """
    n_outputs = y2d.shape[1]
    if not normalize:
        return np.zeros(n_outputs), np.ones(n_outputs)
    y = np.asarray(y2d, dtype=np.float64)
    if sample_weight is None:
        mean, scale = y.mean(axis=0), y.std(axis=0)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)[:, None]
        total = w.sum()
        mean = (w * y).sum(axis=0) / total
        scale = np.sqrt((w * (y - mean) ** 2).sum(axis=0) / total)
    # As scikit-learn's _handle_zeros_in_scale: no spread, no scaling.
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1, np.abs(mean))] = 1.0
    return mean, scale


def bounding_operation(module, rows, device="cpu"):
    """Return the name of the bounded operation that ends ``module``'s output, or None.

    ``module`` runs once on ``rows`` (the first training rows) in evaluation
    mode, with gradients recorded and its modes put back; the autograd graph
    of its output is followed back through reshapes and through shifts and
    factors by constants to the operation that made the values. When that
    operation is a bounded activation (``_BOUNDED``: ReLU, Softplus, Sigmoid,
    Tanh, ``torch.exp``, ...; an even power, a maximum or minimum with a
    constant) its name is returned, e.g. ``"Softplus"``. An
    output made by any other operation (a linear layer, a convolution, a sum
    of terms), one that is not a tensor, or a network that does not run on
    ``rows`` gives None: not found bounded.
    """
    X = to_tensor(rows, device=device)
    if torch.is_tensor(X) and X.is_floating_point():
        X = X.detach().clone().requires_grad_(True)
    try:
        with modes_restored(module), torch.enable_grad():
            module.eval()
            out = module(X)
    except Exception:  # noqa: BLE001 (a probe only; training reports the error)
        return None
    if not torch.is_tensor(out):
        return None
    node = out.grad_fn
    for _ in range(1000):
        if node is None:
            return None
        name = type(node).__name__
        name = name[: name.rfind("Backward")] if "Backward" in name else name
        inputs = [fn for fn, _ in node.next_functions if fn is not None]
        if name in _BOUNDED or _bounded_by_its_constant(name, node, inputs):
            return name
        if (name in _RESHAPES or name in _AFFINE) and len(inputs) == 1:
            node = inputs[0]
            continue
        return None
    return None


def _bounded_by_its_constant(name, node, inputs):
    """Whether an operation is bounded by a constant of its own.

    An even integer power (``x ** 2``, ``torch.square``: bounded below by 0),
    and ``torch.maximum`` / ``torch.minimum`` of the values and a constant
    (the constant has no autograd node, so one input remains).
    """
    if name == "Pow":
        exponent = getattr(node, "_saved_exponent", None)
        return isinstance(exponent, (int, float)) and exponent % 2 == 0
    return name in ("Maximum", "Minimum", "Fmax", "Fmin") and len(inputs) == 1


def check_scaling(normalize_y, criterion, bound, estimator="TransferRegressor"):
    """Return whether targets are standardised; raise where ``True`` cannot be.

    Parameters
    ----------
    normalize_y : bool or "auto"
        The estimator's setting.
    criterion : torch.nn.Module
        The net's initialised criterion.
    bound : str or None
        What :func:`bounding_operation` found.

    Raises
    ------
    ValueError
        For ``normalize_y=True`` with a criterion that is not location- and
        scale-equivariant, or with an output found bounded.
    """
    if normalize_y is False:
        return False
    equivariant = isinstance(criterion, EQUIVARIANT_LOSSES)
    if normalize_y == "auto":
        return equivariant and bound is None
    accepted = ", ".join(cls.__name__ for cls in EQUIVARIANT_LOSSES)
    if not equivariant:
        msg = (
            f"normalize_y=True standardises the targets to mean 0 and standard "
            f"deviation 1, which only a location- and scale-equivariant loss "
            f"follows ({accepted}); the criterion is "
            f"{type(criterion).__name__}, whose targets must stay as they are "
            f"(counts, probabilities, positive values). Set normalize_y='auto' "
            f"(the default: standardise only where valid) or False on "
            f"{estimator}."
        )
        raise ValueError(msg)
    if bound is not None:
        msg = (
            f"normalize_y=True standardises the targets to mean 0 and standard "
            f"deviation 1, but the network's output ends in {bound} (found on "
            f"the first training rows), which is bounded and cannot reach the "
            f"standardised targets on both sides. Set normalize_y='auto' (the "
            f"default: standardise only where valid) or False on {estimator}, "
            "or end the network in a linear layer."
        )
        raise ValueError(msg)
    return True


def standardize(y2d, mean, scale):
    """Return ``(y2d - mean) / scale`` as float32."""
    return ((np.asarray(y2d, dtype=np.float64) - mean) / scale).astype(np.float32)


def restore(y2d, mean, scale):
    """Return network outputs ``y2d`` mapped back to the targets' scale, float64."""
    return np.asarray(y2d, dtype=np.float64) * scale + mean


class ScaledTargets(Dataset):
    """A ``(sample, target)`` dataset whose targets are standardised on the fly.

    For a ``torch.utils.data.Dataset`` given to ``fit_source``: its samples
    pass through unchanged, its targets become ``(target - mean) / scale``.
    """

    def __init__(self, dataset, mean, scale):
        self.dataset = dataset
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample, target = self.dataset[index]
        target = torch.as_tensor(target, dtype=torch.float32)
        shape = target.shape
        scaled = (target.reshape(-1) - self.mean) / self.scale
        return sample, scaled.reshape(shape)
