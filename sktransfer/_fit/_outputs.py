"""What a classifier's network outputs, and the predictions derived from it.

The criterion and skorch's ``predict_nonlinearity`` say what the module
returns: logits (``CrossEntropyLoss``), probabilities (``NLLLoss``, whose log
skorch's ``NeuralNetClassifier`` takes in ``get_loss``), or scores of some other
loss, which define no probabilities. :func:`output_kind` is that lookup (after
skorch's ``utils._infer_predict_nonlinearity``); :func:`check_probe` checks a
new network's outputs against it before training, and :func:`probabilities`
derives ``predict_proba`` from the raw outputs. As in scikit-learn's
``discriminant_analysis.py``, the raw outputs are the one primitive: ``predict``
is their argmax for every kind, so it never depends on a normalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from torch import nn

from .._torch import _probe

__all__ = [
    "PROBABILITIES",
    "PREDICT_NONLINEARITY",
    "SCORES",
    "SIGMOID",
    "SOFTMAX",
    "check_probe",
    "log_probabilities",
    "output_kind",
    "probabilities",
    "template_kind",
]

# The output kinds, as ``TransferClassifier.out_activation_`` reports them.
SOFTMAX = "softmax"  # logits; predict_proba is their softmax
PROBABILITIES = "probabilities"  # probabilities, returned as they are
PREDICT_NONLINEARITY = "predict_nonlinearity"  # the user's callable makes them
SCORES = "scores"  # another criterion's outputs: no probabilities
SIGMOID = "sigmoid"  # multilabel: one logit per label, BCEWithLogitsLoss

# How far a float32 distribution may stray from [0, 1] and a row sum of 1.
_TOL = 1e-4

# Criteria whose targets are not the class indices the classifier trains with.
_BINARY = (nn.BCEWithLogitsLoss, nn.BCELoss)


def _criterion_class(criterion: Any) -> type:
    """Return the class of a criterion given as a class or an instance."""
    criterion = getattr(criterion, "_orig_mod", criterion)  # torch.compile
    return criterion if isinstance(criterion, type) else type(criterion)


def _name(obj: Any) -> str:
    """Return a short name of a criterion or nonlinearity for messages."""
    if isinstance(obj, type):
        return obj.__name__
    if isinstance(obj, nn.Module):
        return repr(obj)
    return getattr(obj, "__name__", repr(obj))


def output_kind(
    criterion: Any, predict_nonlinearity: Any = "auto", *, multilabel: bool = False
) -> str:
    """Return what a classifier's module outputs, by criterion and nonlinearity.

    Parameters
    ----------
    criterion : torch.nn.Module class or instance
        The net's criterion (a ``torch.compile`` wrapper is unwrapped).
    predict_nonlinearity : "auto", callable or None, default="auto"
        skorch's setting of that name.
    multilabel : bool, default=False
        Whether ``y`` is a multilabel indicator matrix, which trains one
        logit per label with ``BCEWithLogitsLoss`` (the only criterion
        accepted then; ``predict_nonlinearity`` is not used).

    Returns
    -------
    kind : {"softmax", "probabilities", "predict_nonlinearity", "scores", \
            "sigmoid"}
        ``"softmax"``: logits, for ``CrossEntropyLoss`` and its subclasses;
        ``"probabilities"``: probabilities, for ``NLLLoss`` and its
        subclasses (skorch takes their log); ``"predict_nonlinearity"``: a
        callable turns the outputs into probabilities; ``"scores"``: outputs
        that define no probabilities (any other criterion, or
        ``predict_nonlinearity=None`` on logits); ``"sigmoid"``: one logit per
        label of a multilabel ``y``.

    Raises
    ------
    ValueError
        For ``BCEWithLogitsLoss`` and ``BCELoss`` on single-label ``y``, which
        take one output and float targets rather than one output per class
        and class indices; for a multilabel ``y``, any criterion but
        ``BCEWithLogitsLoss``.
    TypeError
        If ``predict_nonlinearity`` is none of the above.
    """
    cls = _criterion_class(criterion)
    if multilabel:
        if issubclass(cls, nn.BCEWithLogitsLoss):
            return SIGMOID
        msg = (
            f"A multilabel y (an indicator matrix of 0 and 1, one column per "
            f"label) trains one sigmoid per label with "
            f"criterion=torch.nn.BCEWithLogitsLoss, the default for such a y; got "
            f"criterion={cls.__name__}. Set net__criterion=torch.nn.BCEWithLogitsLoss "
            "(the module returns one logit per label)."
        )
        raise ValueError(msg)
    if issubclass(cls, _BINARY):
        msg = (
            f"criterion={cls.__name__} takes one output per sample and float "
            "targets, but TransferClassifier trains a network with one output per "
            "class on class indices 0 to n_classes - 1. Use "
            "criterion=torch.nn.CrossEntropyLoss with two outputs: a softmax over "
            "two logits is the sigmoid of their difference, the same model. "
            "(BCEWithLogitsLoss is the criterion of a multilabel y, a 2-D indicator "
            "matrix.)"
        )
        raise ValueError(msg)
    if predict_nonlinearity is None:
        return PROBABILITIES if issubclass(cls, nn.NLLLoss) else SCORES
    if isinstance(predict_nonlinearity, str) and predict_nonlinearity == "auto":
        if issubclass(cls, nn.CrossEntropyLoss):
            return SOFTMAX
        if issubclass(cls, nn.NLLLoss):
            return PROBABILITIES
        return SCORES
    if callable(predict_nonlinearity):
        return PREDICT_NONLINEARITY
    msg = (
        "predict_nonlinearity must be 'auto', a callable or None; got "
        f"{predict_nonlinearity!r} of type {type(predict_nonlinearity).__name__}."
    )
    raise TypeError(msg)


def template_kind(net: Any, default_criterion: type) -> tuple[str, Any, Any]:
    """Return the output kind of an estimator's ``net`` parameter, unfitted.

    Returns the kind, the criterion and the ``predict_nonlinearity``; a module
    or ``None`` gets ``default_criterion`` and ``"auto"``.
    """
    if isinstance(net, NeuralNet):
        criterion, nonlin = net.criterion, net.predict_nonlinearity
    else:
        criterion, nonlin = default_criterion, "auto"
    return output_kind(criterion, nonlin), criterion, nonlin


def no_probabilities_message(owner: str, criterion: Any, nonlin: Any) -> str:
    """Return why an estimator whose outputs are scores has no predict_proba."""
    why = (
        "predict_nonlinearity=None leaves the outputs as they are"
        if nonlin is None
        else f"criterion={_name(criterion)} defines no probabilities (only "
        "CrossEntropyLoss, on logits, and NLLLoss, on probabilities, do)"
    )
    return (
        f"This {owner} has no predict_proba: {why}. predict is the argmax of the "
        "network's outputs and decision_function returns them. If the outputs "
        "are logits, set net__predict_nonlinearity=functools.partial(torch.softmax, "
        "dim=-1) to get probabilities."
    )


def has_probabilities(estimator: Any, default_criterion: type) -> bool:
    """Whether an estimator's ``net`` parameter defines probabilities.

    For ``available_if``: True, or an AttributeError saying why not (an
    invalid ``net`` is True here: ``fit`` says what is wrong).
    """
    try:
        kind, criterion, nonlin = template_kind(estimator.net, default_criterion)
    except (TypeError, ValueError):
        return True
    if kind == SCORES:
        owner = type(estimator).__name__
        raise AttributeError(no_probabilities_message(owner, criterion, nonlin))
    return True


def _distribution_fault(proba: torch.Tensor) -> str | None:
    """Return how ``proba`` (n, n_classes) fails to be a distribution, or None."""
    if not torch.is_tensor(proba) or proba.ndim != 2:
        kind = type(proba).__name__
        shape = tuple(proba.shape) if torch.is_tensor(proba) else None
        return f"a {kind} of shape {shape}, not a tensor of shape (n, n_classes)"
    low, high = float(proba.min()), float(proba.max())
    sums = proba.sum(dim=1)
    if not (low >= -_TOL and high <= 1 + _TOL):
        return f"values from {low:.4g} to {high:.4g}, outside [0, 1]"
    if not bool(torch.all((sums - 1).abs() <= _TOL)):
        lo, hi = float(sums.min()), float(sums.max())
        return f"rows summing to {lo:.4g} to {hi:.4g}, not to 1"
    return None


def _looks_like(out: torch.Tensor) -> str:
    """Describe outputs that are no probabilities: log-probabilities or logits."""
    low, high = float(out.min()), float(out.max())
    seen = f"values from {low:.4g} to {high:.4g}"
    if high <= _TOL and _distribution_fault(out.double().exp()) is None:
        return f"{seen}, which look like log-probabilities (a final LogSoftmax)"
    fault = _distribution_fault(out)
    if low >= -_TOL and fault is not None and "not to 1" in fault:
        # In [0, 1] but no distribution: a sigmoid, or a softmax over the batch.
        return f"{seen} in {fault}: no distribution over the classes"
    return f"{seen}, which look like logits"


def _argmax_fault(out: torch.Tensor, proba: torch.Tensor) -> bool:
    """Whether ``proba`` puts its maximum elsewhere than ``out`` does (ties aside)."""
    at_argmax = proba.gather(1, out.argmax(dim=1, keepdim=True)).squeeze(1)
    return bool(torch.any(at_argmax < proba.max(dim=1).values - _TOL))


def _probe_outputs(module: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Return ``module(X)`` computed in eval mode without gradients, no side effects."""
    with _probe.evaluating(module):
        out = module(X)
    return out[0] if isinstance(out, tuple) else out


def check_probe(
    net: NeuralNet,
    X: torch.Tensor,
    *,
    multilabel: bool = False,
    outputs: torch.Tensor | None = None,
) -> None:
    """Check that a classifier net's module outputs what its criterion takes.

    Runs the initialised ``net.module_`` once on the probe batch ``X`` in
    evaluation mode without gradients (no buffer or RNG changes), unless its
    ``outputs`` on ``X`` are given. Does nothing for a net that is not a
    ``NeuralNetClassifier``.

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialised net.
    X : torch.Tensor
        A few samples, on the net's device.
    multilabel : bool, default=False
        Whether the task is multilabel (see :func:`output_kind`).
    outputs : torch.Tensor, default=None
        The module's outputs on ``X``, computed already (``fit`` computes
        them once, in training mode, for all its checks).

    Raises
    ------
    ValueError
        If the criterion is ``BCEWithLogitsLoss`` or ``BCELoss``; if it is
        ``NLLLoss`` and the outputs are not probabilities; if it is
        ``CrossEntropyLoss`` and the outputs already are probabilities; or if a
        callable ``predict_nonlinearity`` does not give probabilities with the
        argmax of the outputs.
    """
    if not isinstance(net, NeuralNetClassifier):
        return
    criterion, nonlin = net.criterion_, net.predict_nonlinearity
    kind = output_kind(criterion, nonlin, multilabel=multilabel)
    if kind in (SCORES, SIGMOID):
        return
    name = _criterion_class(criterion).__name__
    module = type(net.module_).__name__
    if outputs is None:
        outputs = _probe_outputs(net.module_, X)
    elif isinstance(outputs, tuple):
        outputs = outputs[0]
    out = outputs.detach().float()
    n = len(out)
    if kind == PROBABILITIES and _distribution_fault(out) is not None:
        msg = (
            f"criterion={name} under skorch's NeuralNetClassifier needs a module "
            "that outputs probabilities (skorch takes their log before the loss), "
            f"but on {n} probe samples {module} returned {_looks_like(out)}. Use "
            "criterion=torch.nn.CrossEntropyLoss, which takes logits and "
            "log-probabilities alike, or end the module in torch.nn.Softmax(dim=-1)."
        )
        raise ValueError(msg)
    if kind == SOFTMAX and _distribution_fault(out) is None:
        msg = (
            f"criterion={name} applies a softmax to the module's outputs, but on "
            f"{n} probe samples {module} returned probabilities already (values in "
            "[0, 1], each row summing to 1: a final Softmax), which a second softmax "
            "would flatten. Remove the final Softmax so that the module returns "
            "logits, or use criterion=torch.nn.NLLLoss, for which skorch takes the "
            "log of probabilities."
        )
        raise ValueError(msg)
    if kind == PREDICT_NONLINEARITY:
        _check_nonlinearity(nonlin, out, f"on {n} probe samples")


def _check_nonlinearity(nonlin: Any, out: torch.Tensor, where: str) -> torch.Tensor:
    """Return ``nonlin(out)``, checked to be probabilities with the outputs' argmax."""
    proba = nonlin(out)
    fault = _distribution_fault(proba)
    if fault is None and _argmax_fault(out, proba):
        fault = "probabilities whose largest is not at the largest output"
    if fault is not None:
        msg = (
            f"predict_nonlinearity={_name(nonlin)} must turn the network's outputs "
            f"into probabilities (non-negative, each row summing to 1) that are "
            f"largest where the outputs are, since predict is their argmax; {where} "
            f"it returned {fault}. For logits, use "
            "functools.partial(torch.softmax, dim=-1)."
        )
        raise ValueError(msg)
    return proba


def probabilities(out: torch.Tensor, kind: str, nonlin: Any = None) -> np.ndarray:
    """Return the class probabilities derived from the raw outputs ``out``.

    Parameters
    ----------
    out : torch.Tensor of shape (n_samples, n_classes)
        The module's outputs, on the CPU.
    kind : str
        The output kind (see :func:`output_kind`); not ``"scores"``.
    nonlin : callable, default=None
        The ``predict_nonlinearity``, for kind ``"predict_nonlinearity"``.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)
        float64 probabilities with the argmax of ``out``; rows sum to 1.
    """
    if kind == SOFTMAX:
        return torch.softmax(out.double(), dim=1).numpy()
    if kind == SIGMOID:
        return torch.sigmoid(out.double()).numpy()
    if kind == PREDICT_NONLINEARITY:
        proba = _check_nonlinearity(nonlin, out, "at prediction")
        return proba.detach().cpu().double().numpy()
    fault = _distribution_fault(out)
    if fault is not None:
        msg = (
            "criterion=NLLLoss needs a module that outputs probabilities, but at "
            f"prediction it returned {fault}. End the module in "
            "torch.nn.Softmax(dim=-1), or use criterion=torch.nn.CrossEntropyLoss."
        )
        raise ValueError(msg)
    return out.double().numpy()


def log_probabilities(out: torch.Tensor, kind: str, nonlin: Any = None) -> np.ndarray:
    """Return the log of :func:`probabilities`, exactly for logits."""
    if kind == SOFTMAX:
        return torch.log_softmax(out.double(), dim=1).numpy()
    if kind == SIGMOID:
        return torch.nn.functional.logsigmoid(out.double()).numpy()
    with np.errstate(divide="ignore"):  # log(0) is -inf, as it should be
        return np.log(probabilities(out, kind, nonlin))
