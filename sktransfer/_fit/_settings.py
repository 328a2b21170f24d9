"""The estimator's settings of the default network, applied to the net of a phase.

Four estimator parameters set the net (``hidden_layer_sizes``, ``lr``,
``max_epochs``, ``batch_size``, :data:`NET_PARAMETERS`); :func:`overrides`
says what they set on a template, and :func:`nested_error` explains a
``net__`` setting that clashes with one of them. The default template itself
and :func:`~sktransfer.default_net` are in :mod:`sktransfer._estimators._defaults`.
"""

from __future__ import annotations

import inspect
import os
from numbers import Integral

# The estimator parameters that set the net, and the skorch name each sets.
NET_PARAMETERS = {
    "hidden_layer_sizes": "module__hidden_layer_sizes",
    "lr": "lr",
    "max_epochs": "max_epochs",
    "batch_size": "batch_size",
}


def overrides(estimator, net):
    """Return the skorch settings that the estimator's net parameters set on ``net``.

    Parameters
    ----------
    estimator : _BaseTransfer
        The estimator; its ``hidden_layer_sizes``, ``lr``, ``max_epochs`` and
        ``batch_size`` that are not None are returned.
    net : skorch.NeuralNet
        The fresh template built from ``net``.

    Raises
    ------
    ValueError
        If ``hidden_layer_sizes`` is given and the template's module does not
        take it.
    """
    params = {}
    sizes = estimator.hidden_layer_sizes
    if sizes is not None and not all(
        isinstance(h, Integral) and not isinstance(h, bool) and h >= 1 for h in sizes
    ):
        msg = (
            f"hidden_layer_sizes must be a tuple of ints >= 1, one per hidden "
            f"layer, e.g. (100,) or (64, 32); got {sizes!r}."
        )
        raise ValueError(msg)
    for name, skorch_name in NET_PARAMETERS.items():
        value = getattr(estimator, name, None)
        if value is not None:
            params[skorch_name] = (
                tuple(value) if name == "hidden_layer_sizes" else value
            )
    if "module__hidden_layer_sizes" in params and not _takes_hidden_sizes(net.module):
        module = getattr(net.module, "__name__", type(net.module).__name__)
        msg = (
            f"hidden_layer_sizes={estimator.hidden_layer_sizes!r} sets the hidden "
            f"layers of the default MLP, but the network is {module}, whose "
            "constructor takes no hidden_layer_sizes. Leave it None and size "
            "your module through net__module__<name>."
        )
        raise ValueError(msg)
    return params


def _takes_hidden_sizes(module):
    if not isinstance(module, type):
        return False  # an instance is built already
    try:
        return "hidden_layer_sizes" in inspect.signature(module).parameters
    except (TypeError, ValueError):
        return False


def nested_error(estimator, nested, net):
    """Return the message for ``net__<name>`` keys while ``net`` is no skorch net."""
    own = {f"net__{skorch}": name for name, skorch in NET_PARAMETERS.items()}
    instead = [f"{own[key]}=..." for key in nested if key in own]
    kind = (
        "regressor"
        if estimator._net_class.__name__.endswith("Regressor")
        else ("classifier")
    )
    msg = f"Cannot set {', '.join(nested)}: net is {net!r}, not a skorch net. "
    if isinstance(net, (str, os.PathLike)):
        return msg + (
            "A path names a Hugging Face model: give it as "
            f"net=HuggingFaceNet({os.fspath(net)!r}, ...) to set its max_length, "
            "pooling or tokenizer as net__<name> (grid searches too)."
        )
    if instead:
        msg += (
            f"The default network's settings are estimator parameters: set "
            f"{', '.join(instead)} instead. "
        )
    return msg + (
        "To tune any other skorch setting as net__<name>, pass a template: "
        f"net=sktransfer.default_net({kind!r}) (the defaults of net=None) or "
        f"net={estimator._net_class.__name__}(module, ...)."
    )
