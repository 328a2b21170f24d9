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

from typing import Any

from skorch import NeuralNet

from ._classifier import TransferClassifier
from ._regressor import TransferRegressor

__all__ = ["default_net"]


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
    classes = {"classifier": TransferClassifier, "regressor": TransferRegressor}
    if estimator not in classes:
        msg = (
            f"default_net got estimator={estimator!r}; expected 'classifier' or "
            "'regressor'."
        )
        raise ValueError(msg)
    net = classes[estimator]()._template()
    return net.set_params(**params) if params else net
