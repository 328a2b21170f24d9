"""Pretraining through a pipeline: ``sktransfer.fit_source``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn import get_config
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from ._base import _BaseTransfer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def fit_source(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike,
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Pretrain a transfer estimator, or the one that ends a pipeline.

    For a :class:`~sklearn.pipeline.Pipeline`, the pipeline's transformers are
    fitted on the source data, the final transfer estimator is pretrained on
    their output, and each transformer is then kept as fitted on the source:
    it is replaced in the pipeline by a
    :class:`~sklearn.frozen.FrozenEstimator` around its fitted copy. Fitting
    the pipeline on the target task then fine-tunes the transfer estimator
    only, on the target transformed as the source was, so that each input unit
    of the network means the same in both tasks (a one-hot column that meant
    ``"fax"`` at the source is never fed ``"phone"`` at the target).
    ``FrozenEstimator`` survives :func:`~sklearn.base.clone`, so
    cross-validation folds and grid-search candidates keep the source's
    transformers too. Calling ``fit_source`` again refits them on the new
    source; transformers that were frozen before (by the user) stay as they
    are.

    Read more in the :ref:`User Guide <vocabulary>`.

    Parameters
    ----------
    estimator : TransferClassifier, TransferRegressor or Pipeline
        The estimator to pretrain; a pipeline must end in a transfer estimator.
    X : array-like
        Source samples, as the pipeline's first step takes them.
    y : array-like
        Source labels or targets.
    sample_weight : array-like of shape (n_samples,), default=None
        Weight of each source sample in the pretraining loss, given to the
        transfer estimator's ``fit_source``; the transformers are fitted
        unweighted.

    Returns
    -------
    estimator : object
        The same estimator, pretrained; a pipeline's transformer steps are
        now frozen, fitted on the source.

    Notes
    -----
    Target categories the source never had are the encoder's unknown
    categories: ``OneHotEncoder()`` raises a ValueError naming them when the
    pipeline is fitted on the target, and
    ``OneHotEncoder(handle_unknown="ignore")`` encodes them as all zeros. To
    standardise each domain on its own statistics instead (a
    ``StandardScaler`` refitted on the target), pretrain the transfer
    estimator itself on the transformed source, e.g.
    ``clf.fit_source(StandardScaler().fit_transform(X_source), y_source)``,
    and put an unfitted scaler before it in the pipeline.

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
    ...     MLP, criterion=nn.CrossEntropyLoss, lr=0.1, max_epochs=50, train_split=None
    ... )
    >>> pipe = make_pipeline(StandardScaler(), TransferClassifier(net, random_state=0))
    >>> pipe = fit_source(pipe, X[y < 2], y[y < 2])
    >>> type(pipe[0]).__name__, pipe[0].mean_.round(2).tolist()
    ('FrozenEstimator', [5.47, 3.1, 2.86, 0.79])
    >>> pipe.fit(X[y > 0], y[y > 0]).score(X[y > 0], y[y > 0]) > 0.9
    True
    """
    if isinstance(estimator, Pipeline):
        if len(estimator) > 1:
            steps = [(name, _unfrozen(step)) for name, step in estimator.steps[:-1]]
            transformers = clone(Pipeline(steps))
            X = transformers.fit_transform(X, y)
        fit_source(estimator[-1], X, y, sample_weight=sample_weight)
        if len(estimator) > 1:
            estimator.set_params(
                **{name: _frozen(step) for name, step in transformers.steps}
            )
        return estimator
    if not hasattr(estimator, "fit_source"):
        msg = (
            "fit_source needs a TransferClassifier, a TransferRegressor or a Pipeline "
            f"ending in one; got {type(estimator).__name__}."
        )
        raise TypeError(msg)
    if sample_weight is None:
        estimator.fit_source(X, y)
    else:
        estimator.fit_source(X, y, sample_weight=sample_weight)
    return estimator


# Marks the FrozenEstimator steps that fit_source made (a later fit_source
# refits what they hold); an attribute, since clone returns a FrozenEstimator
# itself.
_MARK = "_sktransfer_source_fitted"


def _frozen(step):
    """Return a transformer fitted on the source, frozen; passthrough unchanged."""
    if step is None or isinstance(step, str):
        return step
    frozen = FrozenEstimator(step)
    setattr(frozen, _MARK, True)
    return frozen


def _unfrozen(step):
    """Return what ``fit_source`` fits for a step: the user's estimator."""
    if isinstance(step, FrozenEstimator) and getattr(step, _MARK, False):
        return clone(step.estimator)
    return step


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


class WeightedPipeline(Pipeline):
    """A :class:`~sklearn.pipeline.Pipeline` whose ``fit`` takes ``sample_weight``.

    The weights go to every step whose ``fit`` accepts ``sample_weight``
    (a :class:`~sklearn.preprocessing.StandardScaler`'s weighted mean and
    variance, the linear model, the transfer estimator), so that a row of
    weight 0 changes nothing the pipeline learns. A step that takes no
    weights (:class:`PretrainedFeatures`, which learns nothing) gets none.
    With scikit-learn's metadata routing enabled, the pipeline routes
    ``sample_weight`` as any ``Pipeline`` does, by each step's
    ``set_fit_request``.
    """

    def fit(self, X, y=None, sample_weight=None, **params):
        """Fit every step, each with ``sample_weight`` if its ``fit`` takes it.

        Parameters
        ----------
        X : iterable
            Training data, as the first step takes it.
        y : iterable, default=None
            Training targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample; None weighs samples equally.
        **params : dict
            Further parameters, as ``Pipeline.fit`` takes them.

        Returns
        -------
        self : object
            The fitted pipeline.
        """
        return super().fit(X, y, **self._with_weights(sample_weight, params))

    def fit_transform(self, X, y=None, sample_weight=None, **params):
        """Fit every step (see :meth:`fit`), then transform ``X`` by the last."""
        params = self._with_weights(sample_weight, params)
        return super().fit_transform(X, y, **params)

    def fit_predict(self, X, y=None, sample_weight=None, **params):
        """Fit every step (see :meth:`fit`), then predict ``X`` by the last."""
        params = self._with_weights(sample_weight, params)
        return super().fit_predict(X, y, **params)

    def _with_weights(self, sample_weight, params):
        if sample_weight is None:
            return params
        if get_config()["enable_metadata_routing"]:
            return {**params, "sample_weight": sample_weight}
        named = {
            f"{name}__sample_weight": sample_weight
            for name, step in self.steps
            if step not in (None, "passthrough")
            and has_fit_parameter(step, "sample_weight")
        }
        return {**named, **params}
