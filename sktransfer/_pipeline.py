"""Pretraining through a pipeline: ``sktransfer.fit_source``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn.base import clone
from sklearn.pipeline import Pipeline

from ._base import _BaseTransfer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def fit_source(estimator: Any, X: ArrayLike, y: ArrayLike) -> Any:
    """Pretrain a transfer estimator, or the one that ends a pipeline.

    For a :class:`~sklearn.pipeline.Pipeline`, the source data passes through
    the pipeline's own transformers first (a clone of them, fitted on the
    source data and then discarded), and the final transfer estimator is
    pretrained on the result. The pipeline's transformers stay unfitted, so
    fitting the pipeline on the target task fits them on the target data,
    as :func:`~sklearn.model_selection.cross_val_score` expects.

    Parameters
    ----------
    estimator : TransferClassifier, TransferRegressor or Pipeline
        The estimator to pretrain; a pipeline must end in a transfer estimator.
    X : array-like
        Source samples, as the pipeline's first step takes them.
    y : array-like
        Source labels or targets.

    Returns
    -------
    estimator : object
        The same estimator, pretrained.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skorch import NeuralNetClassifier
    >>> from torch import nn
    >>> from sktransfer import MLP, TransferClassifier, fit_source
    >>> X, y = load_iris(return_X_y=True)
    >>> net = NeuralNetClassifier(
    ...     MLP, criterion=nn.CrossEntropyLoss, lr=0.1, max_epochs=20, train_split=None
    ... )
    >>> pipe = make_pipeline(StandardScaler(), TransferClassifier(net, random_state=0))
    >>> pipe = fit_source(pipe, X[y < 2], y[y < 2])
    >>> pipe.fit(X[y > 0], y[y > 0]).score(X[y > 0], y[y > 0]) > 0.9
    True
    """
    if isinstance(estimator, Pipeline):
        if len(estimator) > 1:
            X = clone(estimator[:-1]).fit_transform(X, y)
        fit_source(estimator[-1], X, y)
        return estimator
    if not hasattr(estimator, "fit_source"):
        msg = (
            "fit_source needs a TransferClassifier, a TransferRegressor or a Pipeline "
            f"ending in one; got {type(estimator).__name__}."
        )
        raise TypeError(msg)
    estimator.fit_source(X, y)
    return estimator


def transfer_step(estimator: Any, caller: str) -> _BaseTransfer:
    """Return the transfer estimator that is ``estimator`` or ends its pipeline.

    Raises
    ------
    TypeError
        If there is none; the message names ``caller``.
    """
    step = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if not isinstance(step, _BaseTransfer):
        msg = (
            f"{caller} needs a TransferClassifier, a TransferRegressor or a "
            f"Pipeline ending in one; got {type(step).__name__}."
        )
        raise TypeError(msg)
    return step
