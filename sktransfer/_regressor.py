"""TransferRegressor: target shaping around the shared base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import RegressorMixin
from skorch import NeuralNetRegressor
from torch import nn
from torch.utils.data import Dataset

from . import _adapt, _augment, _predstore, _targets
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
    normalize_y : bool, default=True
        Standardise the targets before they reach the loss, and map
        predictions back, as ``GaussianProcessRegressor(normalize_y=True)``
        does: each task with its own statistics, per target (pretraining with
        the source's mean and standard deviation, fine-tuning with the
        target's, kept for :meth:`predict`; ``partial_fit`` keeps those of its
        first call). The reported losses are then in units of the targets'
        variance. A network with ``MSELoss`` fits targets far from unit scale
        poorly (on diabetes, targets 25 to 346, the default network reaches
        R² -3.4 without it); ``False`` trains on the targets as they are.
    head : "auto", str, list or tuple of str, or None, default="auto"
        The target-specific layers: submodule names as
        ``module.named_modules()`` gives them. They are not transferred but
        initialised afresh for the target, and the last ``nn.Linear`` among
        them is resized to the number of targets. ``"auto"`` is the output layer by
        the conventions of torchvision and timm: the ``nn.Linear`` that timm's
        ``get_classifier()`` returns, else the last ``nn.Linear`` in a
        top-level ``fc``, ``classifier``, ``head`` or ``heads`` (``"fc"`` for
        a ResNet, ``"classifier.1"`` for a MobileNetV2, ``"heads.head"`` for
        torchvision's ViT), else the module's last ``nn.Linear`` layer
        (``head_`` tells which). ``None`` transfers every weight.
    frozen : str, list or tuple of str, default=()
        Glob patterns over parameter names (``module.named_parameters()``),
        e.g. ``"features.*"``; matching parameters, and shared ones that
        arrive with ``requires_grad=False``, are not updated by :meth:`fit`,
        for its duration only. A pattern that matches nothing is an error.
        See :class:`TransferClassifier`.
    pretrained : bool, default=True
        Start :meth:`fit` from the pretrained weights (``True``) or from
        fresh ones (``False``: every layer initialised as the module's
        constructor does; the weights of a module instance held by ``net``
        are re-initialised with ``reset_parameters``, so no pretrained tensor
        survives). The pretrained weights are kept either way, so
        ``GridSearchCV(clf, {"pretrained": [True, False], ...})`` chooses
        between transfer and scratch (the name timm and torchvision use).
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
        caches when that is safe and takes at most the size of ``X`` or 1 GiB
        (a callback of your own counts as safe when its class sets
        ``sktransfer_safe = True`` in its own body);
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
    layer_decay : float, default=1.0
        Layer-wise learning-rate decay (timm's ``param_groups_layer_decay``):
        a shared parameter ``d`` layers below the head trains at the head's
        learning rate times ``shared_lr_scale * layer_decay ** d``. Layers are
        the submodules holding parameters, in ``named_parameters()`` order; a
        normalisation layer counts with the layer before it. Composes with
        ``unfreeze`` and ``l2sp``; ``1.0`` changes nothing.
    autocast : {"bfloat16"} or None, default=None
        Mixed precision for fine-tuning; see :class:`TransferClassifier`.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the target data (stratified for a
        classifier), stop when its loss has not improved by 1e-4 for
        ``n_iter_no_change`` epochs and restore the weights of the best epoch,
        as :class:`~sklearn.neural_network.MLPClassifier` does. It replaces
        any ``EarlyStopping`` of the template and sets its ``train_split``;
        compatible with ``cache_frozen``. ``False`` keeps the template as it
        is (the default settings stop on the training loss).
    validation_fraction : float, default=0.1
        Share of the target data held out with ``early_stopping=True``; each
        part must hold a sample of every class, else :meth:`fit` raises a
        ``ValueError``.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping: of the validation loss
        with ``early_stopping=True``, of the training loss of the default
        settings otherwise (a skorch template keeps its own callbacks).
    hidden_layer_sizes : tuple of int, default=None
        Width of each hidden layer of the default :class:`~sktransfer.MLP`,
        as in ``MLPRegressor``; ``None`` is ``(100,)``, or what the template
        sets. Only for a network whose module class takes
        ``hidden_layer_sizes``; otherwise a ValueError.
    lr : float, default=None
        Learning rate of both phases; ``None`` is the default network's
        ``1e-3``, or the template's ``lr``. A value overrides the template's.
    max_epochs : int, default=None
        Most epochs of each phase; ``None`` is the default network's ``200``
        (with early stopping), or the template's. A value overrides the
        template's.
    batch_size : int, default=None
        Samples per training batch; ``None`` is the default network's
        ``200``, or the template's. A value overrides the template's.
        These four reach the network in both phases (``source_params``
        still wins while pretraining), so ``GridSearchCV`` tunes them on the
        default network; any other setting of it is reachable from its
        template, ``sktransfer.default_net('regressor')``, passed as ``net``.
    augment : callable or None, default=None
        Applied to each training batch of :meth:`fit` as a whole tensor of
        shape ``(batch_size, ...)``, returning the augmented batch: any
        callable on batched tensors, e.g. a ``kornia.augmentation``
        pipeline (``pip install "sktransfer[augment]"``) or a
        ``torchvision.transforms.v2`` one. Never applied to validation
        batches, :meth:`predict` or ``predict_proba`` (except the
        ``tta_views``). It draws its random numbers from a stream of its own,
        seeded by ``random_state``, so the same seed gives the same augmented
        batches and the rest of training is the same as without it. It must
        be picklable (a module-level function or a class instance, not a
        lambda) and must not change its input in place. Each fold of
        ``cross_val_score`` augments only its own training data. With
        ``augment``, a frozen stage is not cached unless ``cache_views`` is
        set.
    mixup_alpha : float, default=0.0
        MixUp (Zhang et al., ICLR 2018): when positive, each training batch
        (after ``augment``) is mixed with a shuffled copy of itself,
        ``lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(mixup_alpha,
        mixup_alpha)``, and the loss is ``lam * loss(y_i) + (1 - lam) *
        loss(y_j)`` (the cross-entropy against the mixed one-hot targets
        under ``CrossEntropyLoss``; the same gradient as the squared error
        against the mixed targets under ``MSELoss``).
    cutmix_alpha : float, default=0.0
        CutMix (Yun et al., ICCV 2019): when positive, a box covering a
        fraction ``1 - lam`` of each image is pasted from the shuffled copy,
        and the loss weighted by the box's actual area. Images only
        (samples of shape ``(..., height, width)``). With both alphas
        positive, each batch uses one of the two with even odds (as timm's
        ``Mixup``).
    tta_views : int, default=0
        Test-time augmentation: :meth:`predict` averages the predictions over
        the plain input and this many views made by ``augment``, seeded by
        ``random_state`` (the same answer on every call). ``0`` is plain
        prediction, exactly.
    cache_views : int or None, default=None
        Precompute this many augmented views of the training set once per
        :meth:`fit` (``augment`` applied to every sample, from the seeded
        stream) and train on one view per sample, drawn afresh for every
        batch. When the frozen layers form a cacheable leading stage (see
        ``cache_frozen``), the views go through it once, so each epoch costs
        what the trainable rest costs; otherwise the views of the input are
        kept. The views take ``cache_views`` times the size of the stage's
        outputs (or of ``X``), reported in ``frozen_cache_``; under
        ``cache_frozen="auto"`` at most the size of ``X`` or 1 GiB, and always
        at most half the available memory, else a ValueError says so. Needs
        ``augment``; not with ``mixup_alpha``/``cutmix_alpha`` or a
        validation split (the views would be mixed or validated on).
    adapt : {"coral", "mmd", "dann", "self_training"} or None, default=None
        Use unlabelled rows of ``fit``'s data, marked by NaN targets (every target of
        the row): the labelled rows (typically a sample of the source's, with their
        labels, after :meth:`fit_source`) train the supervised loss, and ``adapt`` adds
        a term between them and the unlabelled (target) rows, computed on each shuffled
        batch at ``adapt_layer``: ``"coral"`` matches the features' covariances (Deep
        CORAL, Sun & Saenko 2016), ``"mmd"`` their multi-kernel maximum mean discrepancy
        (DAN, Long et al. 2015), ``"dann"`` makes them indistinguishable to a domain
        classifier trained through a gradient reversal layer (Ganin et al. 2016)
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
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and dropout (torch's global RNG
        is restored afterwards). ``None`` uses torch's global RNG. The same
        seed gives the same weights and predictions on the CPU with the same
        number of torch threads (``torch.get_num_threads()``): float sums
        split over another number of threads round differently.
    verbose : int, default=0
        ``0`` is silent. ``1`` prints, for pretraining and for fine-tuning, a
        header, skorch's epoch table (without colour codes when the output is
        not a terminal) and one summary line: epochs run, why training
        stopped (early stopping at epoch N, or ``max_epochs`` reached), the
        best loss and the time taken. ``2`` adds skorch's ``ProgressBar``
        inside each epoch. Overrides the template's ``verbose``.

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
    head_ : tuple of str
        The submodules that :meth:`fit` rebuilt for the target (what ``head``
        resolved to), e.g. ``("fc",)`` for a ResNet.
    frozen_cache_ : dict
        What :meth:`fit` did with the frozen layers: ``"cached"`` (bool),
        ``"stage"`` (the traced node the network was cut after, or None),
        ``"nbytes"`` (the size of the cached outputs, or of the precomputed
        views), ``"device"`` (where they were kept), ``"reason"`` (why they
        were not cached, or None), ``"views"`` (``cache_views`` when views
        were precomputed, else None) and ``"outputs"``: ``"computed"``, or
        ``"reused"`` from an earlier fit of this process with the same
        weights, stage and rows (see :func:`sktransfer.frozen_store_info`), or
        None when not cached. A cached fit adds ``"digest_seconds"`` (the time
        spent recognising the outputs), ``"compute_seconds"`` (the stage's
        pass, 0 when reused) and ``"store"`` (the store's report). The last
        prediction (``predict``, ``score``, ``transform``, ...) sets
        ``"predict_outputs"``: ``"reused"`` when the frozen stage's outputs
        for its rows came from the store, ``"computed"`` when the stage ran
        on them and stored them, None when the whole network ran (the plain
        path), and ``"predict_reason"``, why the plain path. Only a cached
        stage is served, and only while ``net_.module_`` is the module fit
        split (same layers and ``forward``, no forward hook on any submodule,
        the same plain Python attributes), the split and the whole module
        agree bit for bit on the call's first 8 rows, and the rows' outputs
        fit the store's bound; changed weights change the key.
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

    _parameter_constraints: dict = {
        **_BaseTransfer._parameter_constraints,
        "normalize_y": ["boolean"],
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
        normalize_y: bool = True,
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
        """Shape targets as float32 (n_samples, n_outputs), standardised if asked."""
        y = np.asarray(y)
        y2d = y.reshape(len(y), -1)
        continued = getattr(self, "_partial", None) is not None and hasattr(
            self, "net_"
        )
        if continued and hasattr(self, "_y_mean"):  # partial_fit keeps its scaling
            mean, scale = self._y_mean, self._y_scale
        else:
            mean, scale = _targets.statistics(y2d, self.normalize_y)
        fitted = {
            "n_outputs_": y2d.shape[1],
            "_y_ndim": y.ndim,
            "_y_mean": mean,
            "_y_scale": scale,
        }
        return _targets.standardize(y2d, mean, scale), y2d.shape[1], fitted

    def _source_data(self, X, y):
        data, y_enc, n_outputs, fitted, probe = super()._source_data(X, y)
        if isinstance(X, Dataset) and self.normalize_y:
            data = _targets.ScaledTargets(data, fitted["_y_mean"], fitted["_y_scale"])
        return data, y_enc, n_outputs, fitted, probe

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
        with _predstore.rows(self, X) as rows:
            y = np.asarray(self.net_.predict(rows), dtype=np.float64)
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
