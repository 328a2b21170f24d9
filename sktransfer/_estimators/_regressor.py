"""TransferRegressor: target shaping around the shared base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import RegressorMixin
from skorch import NeuralNetRegressor
from torch import nn
from torch.utils.data import Dataset

from .._compat import StrOptions
from .._fit import _augment
from .._skorch import _adapt
from .._skorch._data import StreamedArray
from . import _targets
from ._base import _BaseTransfer
from ._docstrings import fill

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@fill("regressor")
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

    Read more in the :ref:`User Guide <vocabulary>`.

    Parameters
    ----------
    net : NeuralNetRegressor, module class or instance, factory, or None, default=None
        The network. A skorch ``NeuralNetRegressor`` is an unfitted template:
        it is cloned, never changed, and its settings are reachable as
        ``net__lr``, ``net__module__<name>``, ... A module class or instance is
        wrapped in a ``NeuralNetRegressor`` with the defaults below; an
        instance's own weights are the pretrained weights. A model factory, a
        function returning a module (``torchvision.models.resnet18``,
        ``functools.partial(timm.create_model, "vit_tiny_patch16_224")``, a
        builder of your own), is wrapped the same way, as skorch accepts it;
        the weights it returns are the pretrained ones. ``None`` uses
        :class:`~sktransfer.MLP` with one hidden layer of 100 units. The
        defaults: ``MSELoss``, Adam with ``lr=1e-3``, ``batch_size=200``, up to
        ``max_epochs=200`` with early stopping once the training loss has not
        improved by 1e-4 for 10 epochs, shuffled batches, no validation split.
        A module class whose constructor takes ``n_features_in`` or
        ``n_outputs`` gets them from the data of each task.
    ${shared_parameters}
    adapt : {"coral", "mmd", "dann", "self_training", "adabn"} or None, default=None
        Use unlabelled rows of ``fit``'s data, marked by NaN targets (every target of
        the row): the labelled rows (typically a sample of the source's, with their
        labels, after :meth:`fit_source`) train the supervised loss, and ``adapt`` adds
        a term between them and the unlabelled (target) rows, computed on each shuffled
        batch at ``adapt_layer``: ``"coral"`` matches the features' covariances (Deep
        CORAL, Sun & Saenko 2016), ``"mmd"`` their multi-kernel maximum mean discrepancy
        (DAN, Long et al. 2015), ``"dann"`` makes them indistinguishable to a domain
        classifier trained through a gradient reversal layer (Ganin et al. 2016),
        ``"adabn"`` adds no term and gives the normalisation layers the unlabelled
        rows' statistics when training ends (AdaBN, Li et al. 2016)
        (``"self_training"`` needs class probabilities: classifier only). The unlabelled
        rows never reach the supervised loss; prediction needs no domain marker.
        ``None``: NaN targets are refused, as in every scikit-learn regressor. See
        :ref:`adaptation`.
    adapt_weight : float, default=1.0
        The weight of the adaptation term beside the supervised loss (0: the term is
        computed but adds nothing). Choose it without target labels with
        :func:`~sktransfer.prediction_entropy_scorer` or
        :func:`~sktransfer.importance_weighted_scorer` as ``scoring``.
    adapt_layer : str or None, default=None
        The submodule whose output is aligned, by its name in
        ``module.named_modules()``; ``None``: the head's input (what :meth:`transform`
        returns). A name that is not a submodule raises a ValueError naming the nearest
        ones.
    adapt_threshold : float in (0, 1], default=0.9
        Used by ``adapt="self_training"``, which only :class:`TransferClassifier` has.
    normalize_y : "auto" or bool, default="auto"
        Standardise the targets before they reach the loss, and map
        predictions back, as ``GaussianProcessRegressor(normalize_y=True)``
        does: each task with its own statistics, per target (pretraining with
        the source's mean and standard deviation, fine-tuning with the
        target's, kept for :meth:`predict`; ``partial_fit`` keeps those of its
        first call), both weighted by ``sample_weight`` (a row of weight 0
        changes neither). The reported losses are then in units of the
        targets' variance. A network with ``MSELoss`` fits targets far from
        unit scale poorly (on diabetes, targets 25 to 346, the default network
        reaches R² -3.4 without it). Standardising is valid only for a loss
        that is location- and scale-equivariant (``MSELoss``, ``L1Loss``,
        ``SmoothL1Loss``, ``HuberLoss``) on an output that is not bounded: the
        last operation making the network's output on the first training rows
        (read from the autograd graph, through reshapes) is not a bounded
        activation such as ``ReLU``, ``Softplus``, ``Sigmoid``, ``Tanh`` or
        ``torch.exp``. ``"auto"`` standardises exactly then (the default
        network, and any network ending in a linear layer under those losses)
        and trains on the targets as they are otherwise (``PoissonNLLLoss``,
        ``BCELoss``, a ``Softplus`` output: as plain skorch does). ``True``
        standardises, and raises a ValueError naming the loss or the bounded
        operation where it is not valid; ``False`` trains on the targets as
        they are (:ref:`targets`).
    ${run_parameters}

    Attributes
    ----------
    n_outputs_ : int
        Number of targets seen during :meth:`fit`.
    net_ : NeuralNetRegressor
        The fine-tuned skorch net.
    ${shared_attributes}

    See Also
    --------
    TransferClassifier : The same for class labels.
    fit_source : Pretrain the transfer estimator at the end of a pipeline.

    Notes
    -----
    ${notes}

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

    _parameter_constraints: dict = {
        **_BaseTransfer._parameter_constraints,
        "normalize_y": [StrOptions({"auto"}), "boolean"],
    }

    def __init__(
        self,
        net: Any = None,
        *,
        head: str | Sequence[str] | None = "auto",
        frozen: str | Sequence[str] = (),
        pretrained: bool = True,
        source_params: dict[str, Any] | None = None,
        freeze_bn_stats: bool = True,
        cache_frozen: bool | str = "auto",
        l2sp: float = 0.0,
        l2sp_head: float = 0.0,
        shared_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        unfreeze: Sequence[tuple[int, str | Sequence[str]]] | None = None,
        adapter: Any = None,
        lora_rank: int = 8,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
        lora_targets: str | Sequence[str] | None = None,
        autocast: str | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        hidden_layer_sizes: Sequence[int] | None = None,
        lr: float | None = None,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        augment: Any = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        tta_views: int = 0,
        cache_views: int | None = None,
        adapt: str | None = None,
        adapt_weight: float = 1.0,
        adapt_layer: str | None = None,
        adapt_threshold: float = 0.9,
        normalize_y: bool | str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        # Every parameter of the base (which assigns them), then our own.
        super().__init__(
            net,
            head=head,
            frozen=frozen,
            pretrained=pretrained,
            source_params=source_params,
            freeze_bn_stats=freeze_bn_stats,
            cache_frozen=cache_frozen,
            l2sp=l2sp,
            l2sp_head=l2sp_head,
            shared_lr_scale=shared_lr_scale,
            layer_decay=layer_decay,
            unfreeze=unfreeze,
            adapter=adapter,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
            autocast=autocast,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            hidden_layer_sizes=hidden_layer_sizes,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            augment=augment,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            tta_views=tta_views,
            cache_views=cache_views,
            adapt=adapt,
            adapt_weight=adapt_weight,
            adapt_layer=adapt_layer,
            adapt_threshold=adapt_threshold,
            random_state=random_state,
            verbose=verbose,
        )
        self.normalize_y = normalize_y

    def _encode_y(self, y):
        """Shape targets as float64 (n_samples, n_outputs); see ``_scale_y``."""
        y = np.asarray(y)
        y2d = np.asarray(y.reshape(len(y), -1), dtype=np.float64)
        fitted = {"n_outputs_": y2d.shape[1], "_y_ndim": y.ndim}
        return y2d, y2d.shape[1], fitted

    def _scale_y(self, net, rows, data, y2d, fitted, weights):
        """Standardise the targets where ``normalize_y`` says so and it is valid.

        ``net`` is the phase's initialised net and ``rows`` its first training
        rows (:func:`sktransfer._estimators._targets.check_scaling` decides);
        the mean and scale, weighted by ``weights``, go into ``fitted``.
        Returns the data (a ``Dataset`` source wrapped to scale its targets)
        and the float32 targets.
        """
        continued = getattr(self, "_partial", None) is not None and hasattr(
            self, "net_"
        )
        if continued and hasattr(self, "_y_mean"):  # partial_fit keeps its scaling
            mean, scale = self._y_mean, self._y_scale
        else:
            bound = None  # the network runs only where the loss allows scaling
            if self.normalize_y is not False and isinstance(
                net.criterion_, _targets.EQUIVARIANT_LOSSES
            ):
                bound = _targets.bounding_operation(net.module_, rows, net.device)
            scaled = _targets.check_scaling(
                self.normalize_y, net.criterion_, bound, type(self).__name__
            )
            # Unlabelled rows (NaN targets, ``adapt``) set no statistic.
            labelled = ~np.isnan(np.asarray(y2d, dtype=float)).any(axis=1)
            mean, scale = _targets.statistics(
                y2d[labelled],
                scaled,
                None if weights is None else np.asarray(weights)[labelled],
            )
        fitted.update(_y_mean=mean, _y_scale=scale)
        y_enc = _targets.standardize(y2d, mean, scale)
        identity = np.all(mean == 0) and np.all(scale == 1)
        if isinstance(data, StreamedArray):
            data = StreamedArray(data.X, y_enc)
        elif isinstance(data, Dataset) and not identity:
            data = _targets.ScaledTargets(data, mean, scale)
        return data, y_enc

    def partial_fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> TransferRegressor:
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
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss, as in :meth:`fit`.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._partial_fit(X, y, sample_weight=sample_weight)

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
        y = _augment.tta_average(self, X, self._predict_plain)
        return y.ravel() if self._y_ndim == 1 else y

    def _predict_plain(self, X):
        """Return the network's predictions for validated ``X``, float64.

        On the targets' own scale (``normalize_y`` undone).
        """
        y = np.asarray(self.net_.predict(X), dtype=np.float64)
        return _targets.restore(
            y, getattr(self, "_y_mean", 0.0), getattr(self, "_y_scale", 1.0)
        )

    def score(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """Return R² (coefficient of determination) on the labelled rows.

        As ``RegressorMixin.score``; with ``adapt`` set, the rows marked
        unlabelled (NaN targets) are left out, as they have no label to compare
        with (score them with :func:`~sktransfer.prediction_entropy_scorer`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            R² of ``self.predict(X)``.

        Raises
        ------
        ValueError
            With ``adapt`` set, when every row is unlabelled.
        """
        X, y, sample_weight = _adapt.labelled_for_score(self, X, y, sample_weight)
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
