"""TransferRegressor: target shaping around the shared base."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import RegressorMixin
from skorch import NeuralNetRegressor
from torch import nn

from ._base import _BaseTransfer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class TransferRegressor(RegressorMixin, _BaseTransfer):
    """Regressor that pretrains a PyTorch network on a source task and fine-tunes it.

    A scikit-learn meta-estimator around a skorch
    :class:`~skorch.regressor.NeuralNetRegressor`, for one or several
    continuous targets. :meth:`fit_source` pretrains the whole network on a
    source task; :meth:`fit` fine-tunes it on the target task: the shared
    layers start from the pretrained weights, the head is created anew for the
    target's number of outputs, and the parameters matching ``frozen`` are not
    updated. Without :meth:`fit_source`, :meth:`fit` trains from scratch, or
    from the weights of the module instance that ``net`` holds.

    Parameters
    ----------
    net : NeuralNetRegressor, torch.nn.Module class or instance, or None, \
            default=None
        The network. A skorch ``NeuralNetRegressor`` is an unfitted template:
        it is cloned, never changed, and its settings are reachable as
        ``net__lr``, ``net__module__<name>``, ... A module class or instance is
        wrapped in a ``NeuralNetRegressor`` with the defaults below; an
        instance's own weights are the pretrained weights. ``None`` uses
        :class:`~sktransfer.MLP` with one hidden layer of 100 units. The
        defaults: ``MSELoss``, Adam with ``lr=1e-3``, ``batch_size=200``, up to
        ``max_epochs=200`` with early stopping once the training loss has not
        improved by 1e-4 for 10 epochs, shuffled batches, no validation split.
        A module class whose constructor takes ``n_features_in`` or
        ``n_outputs`` gets them from the data of each task.
    head : "auto", str, list or tuple of str, or None, default="auto"
        The target-specific layers: submodule names as
        ``module.named_modules()`` gives them. They are not transferred but
        initialised afresh for the target, and the last ``nn.Linear`` among
        them is resized to the number of targets. ``"auto"`` is the module's
        last ``nn.Linear`` layer. ``None`` transfers every weight.
    frozen : str, list or tuple of str, default=()
        Glob patterns over parameter names (``module.named_parameters()``),
        e.g. ``"features.*"``; matching parameters, and shared ones that
        arrive with ``requires_grad=False``, are not updated by :meth:`fit`,
        for its duration only. A pattern that matches nothing is an error.
        See :class:`TransferClassifier`.
    source_params : dict, default=None
        skorch settings used only while pretraining, e.g. ``{"max_epochs": 5}``.
    freeze_bn_stats : bool, default=True
        Keep normalisation layers with running statistics whose parameters
        are all frozen in evaluation mode while fine-tuning, so that their
        statistics stay the pretrained ones. ``False`` lets them adapt to the
        target's batches. See :class:`TransferClassifier`.
    cache_frozen : "auto" or bool, default="auto"
        Compute the frozen layers once per :meth:`fit` instead of once per
        epoch, when they form the network's leading stage (what the input
        goes through before the first trainable layer) and that stage computes
        the same while training as while predicting (no active dropout;
        BatchNorm held by ``freeze_bn_stats``). The rest of the network then
        trains on the stage's outputs, to the same weights. A data path that
        may see the samples (a custom ``dataset``, ``collate_fn``, sampler,
        validation split or net method) is never cached. ``"auto"``
        caches when that is safe and takes at most the size of ``X`` or 1 GiB;
        ``True`` always caches or raises a ValueError saying why not;
        ``False`` never caches. See :class:`TransferClassifier`.
    l2sp : float, default=0.0
        Strength of the L2-SP penalty ``l2sp / 2 * sum ||w - w_source||^2``
        over the trainable shared parameters, added to the training loss.
    l2sp_head : float, default=0.0
        Plain L2 penalty ``l2sp_head / 2 * sum ||w||^2`` on the head.
    shared_lr_scale : float, default=1.0
        Factor on the learning rate of the shared parameters.
    unfreeze : sequence of (int, str or sequence of str) pairs, default=None
        Gradual unfreezing: ``((epoch, patterns), ...)``; see
        :class:`TransferClassifier`.
    autocast : {"bfloat16"} or None, default=None
        Mixed precision for fine-tuning; see :class:`TransferClassifier`.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and dropout (torch's global RNG
        is restored afterwards). ``None`` uses torch's global RNG.
    verbose : int, default=0
        ``0`` is silent; ``1`` prints skorch's epoch table of pretraining and
        fine-tuning, each under a header.

    Attributes
    ----------
    n_outputs_ : int
        Number of targets seen during :meth:`fit`.
    net_ : NeuralNetRegressor
        The fine-tuned skorch net.
    n_features_in_ : int
        Number of features seen during :meth:`fit` (the channels, for images).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during :meth:`fit`, when ``X`` has string column
        names.
    frozen_cache_ : dict
        What :meth:`fit` did with the frozen layers: ``"cached"`` (bool),
        ``"stage"`` (the traced node the network was cut after, or None),
        ``"nbytes"`` (the size of the cached outputs), ``"device"`` (where
        they were kept), ``"reason"`` (why they were not cached, or None) and
        ``"outputs"``: ``"computed"``, or ``"reused"`` from an earlier fit of
        this process with the same weights, stage and rows (see
        :func:`sktransfer.frozen_store_info`), or None when not cached. A
        cached fit adds ``"digest_seconds"`` (the time spent recognising the
        outputs), ``"compute_seconds"`` (the stage's pass, 0 when reused) and
        ``"store"`` (the store's report).
    source_feature_names_in_ : ndarray or None
        Column names seen by :meth:`fit_source` (None without names); set by
        :meth:`fit_source`. :meth:`fit` refuses other columns or another order.
    source_weights_ : dict of str to torch.Tensor
        The pretrained ``state_dict``; set by :meth:`fit_source`.
    source_history_ : list of dict
        skorch's history of the pretraining epochs.

    See Also
    --------
    TransferClassifier : The same for class labels, with the details.

    Examples
    --------
    >>> import numpy as np
    >>> from skorch import NeuralNetRegressor
    >>> from sktransfer import MLP, TransferRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 3))
    >>> net = NeuralNetRegressor(MLP, max_epochs=5, train_split=None)
    >>> reg = TransferRegressor(net, random_state=0)
    >>> reg = reg.fit_source(X, X @ [1.0, 2.0, 0.0])
    >>> reg.fit(X[:50], X[:50, :2]).predict(X[:3]).shape
    (3, 2)
    """

    _net_class = NeuralNetRegressor
    _default_criterion = nn.MSELoss
    _multi_output = True
    _output_kind = "outputs"

    def _encode_y(self, y):
        """Shape targets as float32 (n_samples, n_outputs) for the network."""
        y = np.asarray(y, dtype=np.float32)
        y2d = y.reshape(len(y), -1)
        return y2d, y2d.shape[1], {"n_outputs_": y2d.shape[1], "_y_ndim": y.ndim}

    def partial_fit(self, X: ArrayLike, y: ArrayLike) -> TransferRegressor:
        """Fine-tune for one epoch over the given samples.

        The first call starts as :meth:`fit` does (shared layers from the
        pretrained weights, a fresh head); each later call continues from the
        current weights, with a fresh optimizer, as
        ``MLPRegressor.partial_fit`` does. ``max_epochs`` and early stopping
        do not apply: each call is one epoch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Target samples, with the source's sample shape.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their targets, as many per sample on every call.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._partial_fit(X, y)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Return the predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions as float64, one-dimensional when ``fit`` saw a
            one-dimensional y.
        """
        X = self._validate_X(X)
        y = np.asarray(self.net_.predict(X), dtype=np.float64)
        return y.ravel() if self._y_ndim == 1 else y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
