"""The head's input as features: ``transform`` and :class:`PretrainedFeatures`.

The representation the shared layers compute is what the head receives. It
is read with a forward pre-hook on each of the head's submodules: the first
to run records its input and stops the forward pass, so the head never runs.
This holds for any network whose head receives one tensor, whatever the
layers before it compute.
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.utils import to_tensor

from .._common import (
    _CHECK_X,
    _dense_rows,
    _seeded,
    _writable,
    predict_batch_size,
)
from .._fit import _inputs
from .._skorch import _text
from .._torch import _layers, _probe, _transfer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self


class _Reached(Exception):
    """Raised by the pre-hook once the head's input is recorded."""


def head_input(module, head, X, *, batch_size, device):
    """Return the input of ``module``'s head for every sample of ``X``.

    Parameters
    ----------
    module : torch.nn.Module
        The network; run in evaluation mode without gradients (its modes are
        restored after). The pre-hooks act on this call's thread only and are
        removed after, so other threads may predict with ``module`` meanwhile.
    head : sequence of str
        The head's submodule names; the input of the first of them to run is
        recorded, flattened to one row per sample.
    X : ndarray of shape (n_samples, ...)
        The samples.
    batch_size : int
        Samples per forward pass.
    device : str or torch.device
        Where the network runs.

    Returns
    -------
    features : ndarray of shape (n_samples, n_features), float32
    """
    if not head:
        msg = (
            "head=None: the network has no head, so there is no head input to "
            "return. Name the head (head='auto' or a submodule) to use the "
            "network as a feature extractor."
        )
        raise ValueError(msg)
    seen = []
    caller = threading.get_ident()

    def record(_module, args):
        if threading.get_ident() != caller:
            return  # another thread predicting with the same module
        if not args or not torch.is_tensor(args[0]):
            msg = "The head's first layer does not receive one tensor."
            raise TypeError(msg)
        seen.append(args[0].detach().flatten(1).float().cpu())
        raise _Reached

    def run(rows, copied):
        seen.clear()
        with _probe.evaluating(module):
            for start in range(0, len(rows), batch_size):
                batch = to_tensor(rows[start : start + batch_size], device=device)
                if batch.device.type == "cpu" and not copied:
                    # A view of the user's rows: a network that writes its
                    # input in place must not change them.
                    batch = batch.clone()
                try:
                    module(batch)
                except _Reached:
                    continue
                msg = "The network's forward pass never reached its head."
                raise ValueError(msg)
        return torch.cat(seen) if seen else torch.zeros((0, 0))

    handles = [
        module.get_submodule(name).register_forward_pre_hook(record) for name in head
    ]
    try:
        # Texts grouped by length (outputs in the input order), as predicted.
        return _text.in_length_order(module, X, run).numpy()
    finally:
        for handle in handles:
            handle.remove()


def _blank_rows(estimator):
    """Two samples of zeros, of the shape and dtype ``fit`` saw, to size outputs."""
    dtype = getattr(estimator, "_input_dtype", np.float32)
    return np.zeros((2, *estimator._sample_shape), dtype=dtype)


def _source_width(estimator, record, X):
    """Return the output width to build the pretrained network with.

    The record's, when it knows it (``fit_source``, a weight file, a fitted
    estimator). A state dict or a module does not say it: a module instance
    held by ``net`` keeps its own width, and a module class or factory is
    built with 2 outputs, since the features are the head's input whatever
    the head's width.
    """
    if record.n_outputs is not None:
        return record.n_outputs
    module = estimator._template().module
    if isinstance(module, torch.nn.Module):
        # Two rows: the smallest training batch; the width is per sample (a
        # forward pass over more rows only costs time, e.g. a language model's).
        rows = _dense_rows(X, 2)
        rows = _inputs.rows_as_input(rows, _inputs.input_dtype(module, X.dtype))
        return _probe.output_shape(module, to_tensor(rows, "cpu"))[0]
    return 2


class TransformMixin:
    """``transform`` and ``get_feature_names_out`` of the fitted estimators."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # float32 features whatever the input's dtype, as the network computes.
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Return the head's input: the representation the shared layers compute.

        The fine-tuned network runs in evaluation mode up to its head (the
        input of the head's first submodule to run, read by a forward
        pre-hook), as :class:`~sklearn.discriminant_analysis.LinearDiscriminantAnalysis`
        is both a classifier and a transformer. For the *pretrained* network
        before any fit on the target, use :class:`PretrainedFeatures`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples of the shape ``fit`` saw.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), float32
            The head's input, flattened to one row per sample.

        Raises
        ------
        ValueError
            If the estimator has ``head=None`` (no head).
        """
        return self._features(self._validate_X(X))

    def _features(self, X):
        """:meth:`transform` of validated rows (unwrapped by ``set_output``)."""
        net = self.net_
        head = _layers.resolve_head(net.module_, self.head)
        return head_input(
            net.module_,
            head,
            X,
            batch_size=predict_batch_size(net, len(X)),
            device=net.device,
        )

    def fit_transform(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Fine-tune on ``X, y`` (:meth:`fit`), then return :meth:`transform` of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Target samples.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Target labels or targets.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), float32
        """
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return names for the columns of :meth:`transform`.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; the features are learnt, not the input's columns.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``"<classname>0"``, ``"<classname>1"``, ... in lower case, as
            scikit-learn names the outputs of a learnt transformation.
        """
        check_is_fitted(self)
        # Not transform: under set_output(transform="pandas") it asks for the
        # feature names, which would ask transform again.
        width = self._features(_blank_rows(self)).shape[1]
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(width)], dtype=object)


class PretrainedFeatures(TransformerMixin, BaseEstimator):
    """The pretrained network up to its head, as a scikit-learn transformer.

    ``fit`` builds the network of a pretrained transfer estimator with its
    pretrained weights and trains nothing; ``transform`` returns the head's
    input (see :meth:`TransferClassifier.transform`). In a
    :class:`~sklearn.pipeline.Pipeline` before a linear model this is the
    *linear probe*, the standard baseline of transfer learning with few
    labels (Kornblith et al., "Do better ImageNet models transfer better?",
    CVPR 2019). Cloning carries the pretrained weights, so grid searches and
    cross-validation work on it; ``Pipeline(memory=...)`` caches its
    features across fits.

    Read more in the :ref:`User Guide <few_labels>`.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        A pretrained estimator (after ``fit_source`` or ``load_source``, or
        with a module instance holding trained weights as ``net``); it is
        cloned, never changed or fitted.

    Attributes
    ----------
    module_ : torch.nn.Module
        The network with the pretrained weights (its head is not used, and
        keeps fresh weights when the pretrained head has another width than
        the network is built with, as for a bare state dict).
    head_ : tuple of str
        The head's submodule names.
    n_features_in_ : int
        Number of features seen in ``fit`` (flattened).

    See Also
    --------
    TransferClassifier.transform : The fine-tuned network's features.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skorch import NeuralNetClassifier
    >>> from torch import nn
    >>> from sktransfer import MLP, PretrainedFeatures, TransferClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> net = NeuralNetClassifier(
    ...     MLP, criterion=nn.CrossEntropyLoss, lr=0.3, max_epochs=5, train_split=None
    ... )
    >>> clf = TransferClassifier(net, random_state=0).fit_source(X[y < 5], y[y < 5])
    >>> probe = make_pipeline(PretrainedFeatures(clf), LogisticRegression())
    >>> probe.fit(X[y >= 5][:50], y[y >= 5][:50]).predict(X[y >= 5][50:53]).shape
    (3,)
    """

    _parameter_constraints: dict = {"estimator": "no_validation"}

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def __repr__(self, N_CHAR_MAX=700):  # noqa: N803 (scikit-learn's name)
        # scikit-learn prints a nested estimator parameter by parameter, which
        # bypasses the transfer estimator's own readable repr of its template.
        from ._repr import _Shown

        shown = copy.copy(self)  # a shallow copy: nothing is changed
        if isinstance(self.estimator, BaseEstimator):
            shown.estimator = _Shown(repr(self.estimator))
        return BaseEstimator.__repr__(shown, N_CHAR_MAX=N_CHAR_MAX)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> Self:
        """Build the pretrained network; nothing is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples of the source's sample shape (only checked).
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.

        Raises
        ------
        ValueError
            If the estimator has no pretrained weights, or has
            ``pretrained=False``.
        TypeError
            If ``estimator`` is not a transfer estimator.
        """
        estimator = self.estimator
        if not all(
            hasattr(estimator, name) for name in ("fit_source", "_source_record")
        ):
            msg = (
                "PretrainedFeatures needs a TransferClassifier or TransferRegressor; "
                f"got {type(estimator).__name__}."
            )
            raise TypeError(msg)
        if not estimator.pretrained:
            msg = (
                f"PretrainedFeatures computes the pretrained network's features, "
                f"but its {type(estimator).__name__} has pretrained=False, which "
                "is for the estimator's own fit from fresh weights and would be "
                "ignored here. Set pretrained=True (the default); for a baseline "
                "from fresh weights, fit the estimator with pretrained=False and "
                "use its transform."
            )
            raise ValueError(msg)
        record = estimator._source_record()
        if record is None:
            msg = (
                f"PretrainedFeatures needs pretrained weights, but this "
                f"{type(estimator).__name__} has none: call fit_source(X, y) or "
                "load_source(source) first, or pass a module instance as net."
            )
            raise ValueError(msg)
        X = _text.encode_inputs(estimator, X)  # texts: _text.py
        X = _writable(validate_data(self, X, **_CHECK_X))
        _inputs.check_feature_names(self, record)  # the source's columns, in order
        estimator = clone(estimator)
        n_outputs = _source_width(estimator, record, X)
        with _seeded(estimator.random_state, "target"):
            net, _ = estimator._build_net(X, n_outputs, phase="source")
        module = net.module_
        self._input_dtype = _inputs.input_dtype(module, X.dtype)
        head = _layers.resolve_head(module, estimator.head)
        # The head is never run: its weights, and the width it is built with
        # when the record does not say it, change no feature. It gets the
        # pretrained ones where they fit.
        state = record.state_dict
        fits = all(
            key in state and state[key].shape == value.shape
            for key, value in module.state_dict().items()
            if _layers.is_under(key, head)
        )
        _transfer.transfer_weights(module, state, skip=() if fits else head)
        self.module_ = module.eval()
        self.head_ = tuple(head)
        self._device = net.device
        self._batch_size = predict_batch_size(net, len(X))
        self._sample_shape = tuple(X.shape[1:])
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Return the head's input computed by the pretrained network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples of the shape ``fit`` saw.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), float32
            The input of the pretrained network's head, one row per sample.
        """
        X = _text.encode_inputs(self.estimator, X)  # texts: _text.py
        return self._features(_inputs.validated_rows(self, X))

    def _features(self, X):
        """:meth:`transform` of validated rows (unwrapped by ``set_output``)."""
        return head_input(
            self.module_,
            self.head_,
            X,
            batch_size=self._batch_size,
            device=self._device,
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return ``"pretrainedfeatures0"``, ``"pretrainedfeatures1"``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; the features are learnt, not the input's columns.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``"pretrainedfeatures0"``, ``"pretrainedfeatures1"``, ... in lower
            case, one per output feature.
        """
        check_is_fitted(self)
        width = self._features(_blank_rows(self)).shape[1]  # (see TransformMixin)
        return np.asarray(
            [f"pretrainedfeatures{i}" for i in range(width)], dtype=object
        )
