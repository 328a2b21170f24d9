"""The default network used when an estimator is given ``net=None``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid}


class MLP(nn.Module):
    """Multi-layer perceptron with a ``features`` stage and a ``head``.

    The shared layers live in ``features`` (an ``nn.Sequential`` of
    ``Flatten``, then ``Linear`` → activation → optional ``Dropout`` per hidden
    layer) and the task-specific output layer is ``head``, an ``nn.Linear``.
    Samples of any shape are flattened, so image arrays work too. The module
    returns raw scores (logits); pair it with ``torch.nn.CrossEntropyLoss`` for
    classification and ``torch.nn.MSELoss`` for regression.

    The estimators fill ``n_features_in`` and ``n_outputs`` from the data of
    each task, so they are rarely given by hand.

    Read more in the :ref:`User Guide <networks>`.

    Parameters
    ----------
    n_features_in : int
        Number of input features (the product of the sample shape).
    n_outputs : int
        Number of outputs: classes for a classifier, targets for a regressor.
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer, as in :class:`sklearn.neural_network.MLPClassifier`.
    activation : {"relu", "tanh", "logistic"}, default="relu"
        Activation after each hidden layer.
    dropout : float, default=0.0
        Dropout probability after each hidden activation; ``0`` adds no layer.

    Examples
    --------
    >>> import torch
    >>> from sktransfer import MLP
    >>> module = MLP(n_features_in=4, n_outputs=3, hidden_layer_sizes=(8,))
    >>> module(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    >>> [name for name, _ in module.named_parameters()]
    ['features.1.weight', 'features.1.bias', 'head.weight', 'head.bias']
    """

    def __init__(
        self,
        n_features_in: int,
        n_outputs: int,
        hidden_layer_sizes: Sequence[int] = (100,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("n_features_in", n_features_in), ("n_outputs", n_outputs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"MLP needs {name} as an int >= 1, got {value!r}."
                raise ValueError(msg)
        if activation not in _ACTIVATIONS:
            msg = (
                f"MLP got activation={activation!r}; "
                f"expected one of {sorted(_ACTIVATIONS)}."
            )
            raise ValueError(msg)
        if not 0.0 <= dropout < 1.0:
            msg = f"MLP needs 0 <= dropout < 1, got dropout={dropout!r}."
            raise ValueError(msg)
        sizes = [int(n_features_in), *(int(h) for h in hidden_layer_sizes)]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], int(n_outputs))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return the logits (or regression outputs) for a batch ``X``."""
        return self.head(self.features(X))


def n_flat_features(sample_shape: tuple[int, ...]) -> int:
    """Return the number of features of a flattened sample of ``sample_shape``."""
    return math.prod(sample_shape) if sample_shape else 1
