"""The unfitted skorch net a transfer estimator builds each phase's net from."""

from __future__ import annotations

import copy
import inspect

import torch
from sklearn.base import clone
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping
from torch import nn

from .._fit import _build
from .._torch import _hf
from .._torch._modules import MLP, n_flat_features


def default_net_params(criterion):
    """Return the settings of a net built around a module or the default MLP.

    Parameters
    ----------
    criterion : type of torch.nn.Module
        The estimator's default loss (``CrossEntropyLoss``, ``MSELoss``, or
        ``BCEWithLogitsLoss`` for a multilabel ``y``).

    Returns
    -------
    params : dict
        skorch settings: Adam at ``lr=1e-3``, ``batch_size=200``, up to 200
        epochs with early stopping on the training loss (patience 10,
        threshold 1e-4), shuffled batches, no validation split.
    """
    return {
        "criterion": criterion,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": 200,
        "batch_size": 200,
        "train_split": None,
        "iterator_train__shuffle": True,
        "callbacks": [
            (
                "early_stopping",
                EarlyStopping(
                    monitor="train_loss",
                    patience=10,
                    threshold=1e-4,
                    threshold_mode="abs",
                ),
            )
        ],
    }


def net_template(estimator):
    """Return a fresh, unfitted skorch net built from ``estimator.net`` as given.

    Raises
    ------
    TypeError
        If ``net`` is none of: None, a skorch net of the estimator's class, a
        module class or instance, a model factory, a Hugging Face model.
    ValueError
        If ``net`` is an initialized skorch net (its weights would be lost).
    """
    net, cls = estimator.net, estimator._net_class
    owner = type(estimator).__name__
    if net is None:
        return cls(MLP, **estimator._default_net_params())
    if isinstance(net, NeuralNet):
        if not isinstance(net, cls):
            msg = (
                f"{owner} needs net to be a skorch {cls.__name__}, got a "
                f"{type(net).__name__}."
            )
            raise TypeError(msg)
        if getattr(net, "initialized_", False):
            msg = (
                f"net is an initialized {type(net).__name__}; it is used as an "
                "unfitted template and its trained weights would be lost. To "
                f"start from them, pass the trained module instead: {owner}"
                f"(net.module_) or {owner}({cls.__name__}(net.module_, ...))."
            )
            raise ValueError(msg)
        return clone(net)
    spec = _hf.as_spec(net)  # a Hugging Face model (_hf.py)
    if spec is not None:
        return cls(
            spec.build(), **_hf.net_params(estimator._default_net_params(), spec)
        )
    if isinstance(net, nn.Module):
        return cls(copy.deepcopy(net), **estimator._default_net_params())
    if isinstance(net, type) and issubclass(net, nn.Module) or _build.is_factory(net):
        return cls(net, **estimator._default_net_params())
    msg = (
        f"net must be None, a skorch {cls.__name__}, a torch.nn.Module class "
        "or instance, or a function returning a module (a model factory such "
        f"as torchvision.models.resnet18); got {net!r} of type "
        f"{type(net).__name__}."
    )
    raise TypeError(msg)


def module_sizes(net, X, n_outputs):
    """``module__n_features_in`` / ``module__n_outputs`` the module accepts.

    Filled for a module class (or factory) whose constructor takes them,
    unless the template sets them already: the flattened sample size of ``X``
    and ``n_outputs``.
    """
    if not (isinstance(net.module, type) or _build.is_factory(net.module)):
        return {}
    try:
        accepted = inspect.signature(net.module).parameters
    except (TypeError, ValueError):  # a class without an inspectable signature
        return {}
    given = net.get_params(deep=False)
    sizes = {"n_features_in": n_flat_features(X.shape[1:]), "n_outputs": n_outputs}
    return {
        f"module__{name}": value
        for name, value in sizes.items()
        if name in accepted and f"module__{name}" not in given
    }
