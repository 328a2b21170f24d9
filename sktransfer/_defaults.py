"""The default network's settings as estimator parameters, and the default template.

``TransferClassifier()`` builds a skorch net around :class:`~sktransfer.MLP`
with settings of its own (Adam, shuffled batches, early stopping, no
validation split). Four of them are estimator parameters, so that
``set_params`` and ``GridSearchCV`` reach them under the names scikit-learn's
``MLPClassifier`` and skorch use: ``hidden_layer_sizes``, ``lr``,
``max_epochs`` and ``batch_size``. Each is ``None`` by default, meaning the
default network's value (or the ``net`` template's own); a value given
overrides it in both phases (``source_params`` still wins while pretraining).

:func:`default_net` returns the default template itself, for a user who wants
to start from it and change anything else (``net__optimizer``, callbacks).
"""

from __future__ import annotations

import inspect
from numbers import Integral
from typing import Any

from skorch import NeuralNet

__all__ = ["default_net"]

# The estimator parameters that set the net, and the skorch name each sets.
NET_PARAMETERS = {
    "hidden_layer_sizes": "module__hidden_layer_sizes",
    "lr": "lr",
    "max_epochs": "max_epochs",
    "batch_size": "batch_size",
}


def default_net(estimator: str = "classifier", **params: Any) -> NeuralNet:
    """Return the skorch net that a transfer estimator builds for ``net=None``.

    An unfitted :class:`~skorch.classifier.NeuralNetClassifier` (or
    :class:`~skorch.regressor.NeuralNetRegressor`) around
    :class:`~sktransfer.MLP`, with the defaults of ``net=None``:
    ``CrossEntropyLoss`` (or ``MSELoss``), Adam with ``lr=1e-3``,
    ``batch_size=200``, shuffled batches, no validation split, up to
    ``max_epochs=200`` with early stopping once the training loss has not
    improved by 1e-4 for 10 epochs. Pass it, changed, as ``net`` to keep these
    defaults while changing anything else; its settings are then reachable as
    ``net__<name>``.

    Read more in the :ref:`User Guide <networks>`.

    Parameters
    ----------
    estimator : {"classifier", "regressor"}, default="classifier"
        Which estimator's default.
    **params : dict
        skorch settings that replace the defaults, as ``set_params`` takes
        them, e.g. ``lr=1e-2``, ``optimizer=torch.optim.SGD`` or
        ``module__hidden_layer_sizes=(64, 32)``.

    Returns
    -------
    net : NeuralNetClassifier or NeuralNetRegressor
        A new, unfitted template.

    Raises
    ------
    ValueError
        If ``estimator`` is neither ``"classifier"`` nor ``"regressor"``, or
        skorch refuses a setting.

    Examples
    --------
    >>> from sktransfer import TransferClassifier, default_net
    >>> net = default_net("classifier", lr=1e-2, module__dropout=0.2)
    >>> type(net).__name__, net.lr, net.max_epochs, net.train_split
    ('NeuralNetClassifier', 0.01, 200, None)
    >>> clf = TransferClassifier(net).set_params(net__optimizer__weight_decay=1e-4)
    """
    from ._classifier import TransferClassifier
    from ._regressor import TransferRegressor

    classes = {"classifier": TransferClassifier, "regressor": TransferRegressor}
    if estimator not in classes:
        msg = (
            f"default_net got estimator={estimator!r}; expected 'classifier' or "
            "'regressor'."
        )
        raise ValueError(msg)
    net = classes[estimator]()._template()
    return net.set_params(**params) if params else net


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
