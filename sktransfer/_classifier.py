"""TransferClassifier: label encoding and probabilities around the shared base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch import NeuralNetClassifier
from torch import nn

from . import _adapt, _augment, _outputs, _predstore, _weights
from ._base import _BaseTransfer
from ._compat import StrOptions
from ._partial import encode_partial_classes

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self


class TransferClassifier(ClassifierMixin, _BaseTransfer):
    """Classifier that pretrains a PyTorch network on a source task and fine-tunes it.

    A scikit-learn meta-estimator around a skorch
    :class:`~skorch.classifier.NeuralNetClassifier`. :meth:`fit_source`
    pretrains the whole network on a source task; :meth:`fit` fine-tunes it on
    the target task: the shared layers start from the pretrained weights, the
    head (the task-specific layers) is created anew for the target's classes,
    and the parameters matching ``frozen`` are not updated. Source and target
    may have different classes, in number and in name. Without
    :meth:`fit_source`, :meth:`fit` trains from scratch, or from the weights of
    the module instance that ``net`` holds.

    Parameters
    ----------
    net : NeuralNetClassifier, module class or instance, factory, or None, default=None
        The network. A skorch ``NeuralNetClassifier`` is an unfitted template:
        it is cloned, never changed, and its settings are reachable as
        ``net__lr``, ``net__module__<name>``, ... A module class or instance is
        wrapped in a ``NeuralNetClassifier`` with the defaults below; an
        instance's own weights are the pretrained weights. A model factory, a
        function returning a module (``torchvision.models.resnet18``,
        ``functools.partial(timm.create_model, "vit_tiny_patch16_224")``, a
        builder of your own), is wrapped the same way, as skorch accepts it;
        the weights it returns are the pretrained ones. ``None`` uses
        :class:`~sktransfer.MLP` with one hidden layer of 100 units. The
        defaults: ``CrossEntropyLoss`` (the module returns logits), Adam with
        ``lr=1e-3``, ``batch_size=200``, up to ``max_epochs=200`` with early
        stopping once the training loss has not improved by 1e-4 for 10 epochs,
        shuffled batches, no validation split. A module class whose constructor
        takes ``n_features_in`` or ``n_outputs`` gets them from the data of each
        task (the flattened sample size, the number of classes). The
        criterion says what the module outputs: logits for
        ``CrossEntropyLoss`` (and its subclasses), probabilities for
        ``NLLLoss`` (skorch's ``NeuralNetClassifier`` default, which takes
        their log), scores for any other loss; a probe on a few samples checks
        this before training (see Notes). ``BCEWithLogitsLoss`` and ``BCELoss``
        are refused: use ``CrossEntropyLoss`` with two outputs.
    head : "auto", str, list or tuple of str, or None, default="auto"
        The target-specific layers: submodule names as
        ``module.named_modules()`` gives them. They are not transferred but
        initialised afresh for the target, and the last ``nn.Linear`` among
        them is resized to the number of classes. ``"auto"`` is the output layer by
        the conventions of torchvision and timm: the ``nn.Linear`` that timm's
        ``get_classifier()`` returns, else the last ``nn.Linear`` in a
        top-level ``fc``, ``classifier``, ``head`` or ``heads`` (``"fc"`` for
        a ResNet, ``"classifier.1"`` for a MobileNetV2, ``"heads.head"`` for
        torchvision's ViT), else the module's last ``nn.Linear`` layer
        (``head_`` tells which). ``None`` transfers every weight (the source
        and target tasks must then have as many classes).
    frozen : str, list or tuple of str, default=()
        Glob patterns (``fnmatch``; ``*`` also matches dots) over parameter
        names as ``module.named_parameters()`` gives them, e.g. ``"features.*"``.
        Matching parameters are not updated by :meth:`fit`, nor are shared
        parameters that arrive with ``requires_grad=False`` (a module frozen by
        hand); the head, initialised afresh, always trains unless matched.
        Pretraining trains every parameter. A pattern that matches nothing is
        an error. Freezing lasts for :meth:`fit` only: afterwards every
        parameter of ``net_.module_`` has the ``requires_grad`` it arrived
        with, so that the fitted module fine-tunes again as a plain module
        (continuing with ``net_.partial_fit`` trains every parameter).
    pretrained : bool, default=True
        Start :meth:`fit` from the pretrained weights (``True``) or from
        fresh ones (``False``: every layer initialised as the module's
        constructor does; the weights of a module instance held by ``net``
        are re-initialised with ``reset_parameters``, so no pretrained tensor
        survives). The pretrained weights are kept either way, so
        ``GridSearchCV(clf, {"pretrained": [True, False], ...})`` chooses
        between transfer and scratch (the name timm and torchvision use).
    source_params : dict, default=None
        skorch settings used only while pretraining, e.g.
        ``{"max_epochs": 5, "lr": 1e-2}``; they update the ``net`` template.
    freeze_bn_stats : bool, default=True
        Keep normalisation layers with running statistics (BatchNorm,
        InstanceNorm with ``track_running_stats=True``) whose parameters are
        all frozen, in the sense of ``frozen``, in evaluation mode while
        fine-tuning, so that their statistics stay the pretrained ones (as
        Keras does). A layer without parameters counts as frozen when its
        nearest enclosing block with parameters is. Held by forward pre-hooks
        that :meth:`fit` removes when it ends. ``False`` lets them adapt to
        the target's batches, as skorch's ``Freezer`` callback does.
    cache_frozen : "auto" or bool, default="auto"
        Compute the frozen layers once per :meth:`fit` instead of once per
        epoch, when they form the network's leading stage (what the input
        goes through before the first trainable layer) and that stage computes
        the same while training as while predicting (no active dropout;
        BatchNorm held by ``freeze_bn_stats``). The rest of the network then
        trains on the stage's outputs, to the same weights. Nothing between
        the array and the module may see the samples: the net's ``dataset``
        must be skorch's ``Dataset``, its iterators skorch's or
        :class:`ArrayLoader` without a ``collate_fn``, sampler or other
        setting beyond batching and workers, its ``train_split`` None or a
        ``ValidSplit``, and its class must not override skorch's methods on
        the data path (``get_dataset``, ``train_step_single``, ...);
        otherwise neither ``"auto"`` nor ``True`` caches. ``"auto"``
        caches when that is safe, the outputs take at most the size of ``X``
        or 1 GiB, whichever is larger, and the net has no callbacks beyond
        skorch's scoring, printing, timing, learning-rate, gradient-clipping
        and early-stopping ones (without ``load_best``), since others may read
        or write the module's parameters while it is only the trainable rest;
        a callback of your own is trusted when its class sets
        ``sktransfer_safe = True`` in its own body (it reads neither the
        samples nor the frozen layers' parameters, and never changes a
        module's train/eval mode; the lean training step trusts it too);
        otherwise it fine-tunes uncached (``verbose=1`` says why). ``True``
        caches whatever the size and callbacks and raises a ValueError saying
        why when it cannot; ``False`` never caches. See Notes.
    l2sp : float, default=0.0
        Strength of the L2-SP penalty (Li et al., ICML 2018): :meth:`fit` adds
        ``l2sp / 2 * sum ||w - w_source||^2`` over the shared parameters that
        are trainable to the training loss, keeping them near the pretrained
        weights rather than fixed. Needs pretrained weights; ``0`` adds nothing.
    l2sp_head : float, default=0.0
        Plain L2 penalty ``l2sp_head / 2 * sum ||w||^2`` on the head's
        trainable parameters, the paper's second term.
    shared_lr_scale : float, default=1.0
        The shared parameters train with the learning rate times this factor
        and the head with the learning rate itself (discriminative learning
        rates). Applied within each of skorch's optimizer parameter groups
        (``net__optimizer__param_groups``), for any torch optimizer.
    unfreeze : sequence of (int, str or sequence of str) pairs, default=None
        Gradual unfreezing: when each given epoch begins (the first epoch is
        1), the parameters matching the glob patterns become trainable, e.g.
        ``((3, "features.2.*"), (6, "features.*"))``. BatchNorm layers held by
        ``freeze_bn_stats`` train again once their parameters unfreeze.
    layer_decay : float, default=1.0
        Layer-wise learning-rate decay (timm's ``param_groups_layer_decay``):
        a shared parameter ``d`` layers below the head trains at the head's
        learning rate times ``shared_lr_scale * layer_decay ** d``. Layers are
        the submodules holding parameters, in ``named_parameters()`` order; a
        normalisation layer counts with the layer before it. Composes with
        ``unfreeze`` and ``l2sp``; ``1.0`` changes nothing.
    autocast : {"bfloat16"} or None, default=None
        Mixed precision for fine-tuning: ``"bfloat16"`` runs the forward and
        backward passes under :func:`torch.autocast` (matrix products and
        convolutions in bfloat16; weights, gradients and optimizer in float32),
        on the CPU or a GPU that supports bfloat16. Pretraining and
        prediction stay in float32. ``None`` trains in float32.
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
    class_weight : dict, "balanced" or None, default=None
        Weights of the target's classes in the fine-tuning loss, as
        scikit-learn's classifiers take them: a dict ``{label: weight}``
        (labels not in it weigh 1), ``"balanced"`` for
        ``n_samples / (n_classes * np.bincount(y))``, or None for equal
        weights. Multiplied into ``fit``'s ``sample_weight``; see Notes.
        Pretraining does not use it: pass
        ``sample_weight=compute_sample_weight("balanced", y_source)`` to
        :meth:`fit_source` for that.
    hidden_layer_sizes : tuple of int, default=None
        Width of each hidden layer of the default :class:`~sktransfer.MLP`,
        as in ``MLPClassifier``; ``None`` is ``(100,)``, or what the template
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
        template, ``sktransfer.default_net('classifier')``, passed as ``net``.
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
        Test-time augmentation: ``predict_proba`` (and ``predict``,
        ``predict_log_proba``) average the probabilities over the plain input
        and this many views made by ``augment``, seeded by ``random_state``
        (the same answer on every call). ``0`` is plain prediction, exactly.
        ``decision_function`` is never averaged.
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
        Use unlabelled rows of ``fit``'s data, marked by ``y == -1`` (as
        :class:`~sklearn.semi_supervised.SelfTrainingClassifier`): the labelled rows
        (typically a sample of the source's, with their labels, after
        :meth:`fit_source`) train the supervised loss, and ``adapt`` adds a term between
        them and the unlabelled (target) rows, computed on each shuffled batch at
        ``adapt_layer``: ``"coral"`` matches the features' covariances (Deep CORAL, Sun
        & Saenko 2016), ``"mmd"`` their multi-kernel maximum mean discrepancy (DAN, Long
        et al. 2015), ``"dann"`` makes them indistinguishable to a domain classifier
        trained through a gradient reversal layer (Ganin et al. 2016), and
        ``"self_training"`` trains on the unlabelled rows whose most probable class
        reaches ``adapt_threshold`` with that class as label (pseudo-labels, recomputed
        on every batch). The unlabelled rows never reach the supervised loss; prediction
        needs no domain marker. ``None``: ``-1`` is an ordinary class label, as in every
        supervised scikit-learn classifier (a warning says so when ``-1`` appears beside
        the labels 0, 1, ...). See :ref:`adaptation`.
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
        For ``adapt="self_training"``: the probability a row's predicted class needs to
        become its pseudo-label, as ``SelfTrainingClassifier(threshold=...)``.
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
    classes_ : ndarray of shape (n_classes,)
        The target's class labels.
    net_ : NeuralNetClassifier
        The fine-tuned skorch net; ``net_.history`` holds the fine-tuning
        epochs.
    n_features_in_ : int
        Number of features seen during :meth:`fit` (the channels, for images).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during :meth:`fit`, when ``X`` has string column
        names.
    source_feature_names_in_ : ndarray or None
        Column names seen by :meth:`fit_source` (None without names); set by
        :meth:`fit_source`. :meth:`fit` refuses other columns or another order.
    out_activation_ : str
        What the fitted network outputs, hence how :meth:`predict_proba`
        follows from it: ``"softmax"`` (logits), ``"probabilities"``,
        ``"predict_nonlinearity"`` (the net's callable ``predict_nonlinearity``
        makes probabilities) or ``"scores"`` (no probabilities).
    source_classes_ : ndarray
        The source's class labels; set by :meth:`fit_source`.
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
    source_weights_ : dict of str to torch.Tensor
        The pretrained ``state_dict``; set by :meth:`fit_source`.
    source_history_ : list of dict
        skorch's history of the pretraining epochs.

    See Also
    --------
    TransferRegressor : The same for continuous targets.
    fit_source : Pretrain the transfer estimator at the end of a pipeline.

    Notes
    -----
    Every fit is right or stops. A non-finite training loss raises a
    ValueError naming the epoch; Ctrl-C (SIGINT, received in the main thread)
    ends :meth:`fit`, :meth:`fit_source` or :meth:`partial_fit` with
    ``KeyboardInterrupt``, also inside ``GridSearchCV``; in both cases the
    estimator is left as it was. A callback that raises ``KeyboardInterrupt``
    itself (skorch's ``EarlyStopping``) still just ends training. Training
    that runs all ``max_epochs`` while the net's early stopping never
    triggered gives a :class:`~sklearn.exceptions.ConvergenceWarning`.

    ``warm_start=True`` in the template makes each :meth:`fit` continue from
    the last fit's weights (with a fresh optimizer and history, the same
    classes, sample shape and frozen set; L2-SP still pulls toward the
    pretrained weights). The template's ``verbose`` (replaced by the
    estimator's) and ``classes`` (the labels come from ``y``) are not used;
    setting them warns.

    Pretrained weights are prior knowledge rather than fitted state:
    :func:`sklearn.base.clone` keeps them (through ``__sklearn_clone__``), so
    ``cross_val_score`` and ``GridSearchCV`` fine-tune every fold and candidate
    from the same pretrained weights, and never pretrain again. They survive
    pickling too.

    Fine-tuning batches are slices of whole tensors (:class:`ArrayLoader`)
    rather than skorch's per-sample ``DataLoader``, with the same batches and
    results for the same seed; a template with its own ``iterator_train`` or
    ``iterator_valid`` keeps it.

    A validation set given through the template, as in
    ``train_split=predefined_split(Dataset(X_val, y_val))``, gets the label
    encoding and checks of :meth:`fit`'s own ``y`` and ``X``: its labels are
    mapped to the classes of ``y`` (a label that ``y`` does not have is a
    ValueError), so that ``valid_acc`` and ``valid_loss`` in ``net_.history``
    and callbacks such as ``EarlyStopping`` see the true scores. It must be a
    skorch ``Dataset`` of arrays or a ``TensorDataset``.

    :meth:`predict` is the argmax of the network's outputs whatever the
    criterion, and :meth:`decision_function` returns those outputs.
    :meth:`predict_proba` is their softmax under ``CrossEntropyLoss``, the
    outputs themselves under ``NLLLoss``, or the net's callable
    ``predict_nonlinearity`` applied to them (checked to give probabilities
    with the same argmax). Under any other criterion the outputs define no
    probabilities and ``predict_proba`` is not available (``hasattr`` is
    False, as for ``SVC(probability=False)``), unless ``predict_nonlinearity``
    is a callable. Before training, :meth:`fit` and :meth:`fit_source` run the
    new network on up to 8 samples (in evaluation mode, without gradients or
    side effects) and raise a ValueError naming the criterion and the fix when
    a module under ``NLLLoss`` outputs no probabilities (logits,
    log-probabilities), when one under ``CrossEntropyLoss`` outputs
    probabilities already, or when a callable ``predict_nonlinearity`` gives
    no probabilities.

    Sample weights (``sample_weight`` of :meth:`fit`, :meth:`fit_source` and
    :meth:`partial_fit`, times ``class_weight``) weigh each sample's loss:
    each mini-batch's loss is ``sum(w * loss) / sum(w)`` over its samples, as
    ``MLPClassifier`` computes it (``np.average`` with weights per batch). The
    weights travel with the batches of :class:`ArrayLoader` (the template must
    keep its default ``iterator_train``) and the criterion must have torch's
    ``reduction`` attribute. Integer weights are close to, but not exactly,
    repeating samples: repeated samples change the mini-batches. A validation
    split of the weighted rows (``early_stopping``) has its loss weighted too.

    Frozen-stage caching traces ``forward`` with :mod:`torch.fx` and cuts the
    graph after the last node that is computed from the input by frozen layers
    alone and that alone feeds everything after it (a skip connection inside
    the stage is fine; one around it is not). A probe on a few samples checks
    that the stage gives the same output in training and evaluation mode and
    that the cut network reproduces the whole one. The cache holds
    ``n_samples`` times the stage's output size in float32, on the CPU, for
    the duration of :meth:`fit`; :meth:`predict` always runs the whole network.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skorch import NeuralNetClassifier
    >>> from sktransfer import MLP, TransferClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> from torch import nn
    >>> net = NeuralNetClassifier(
    ...     MLP, criterion=nn.CrossEntropyLoss, max_epochs=5, lr=0.1, train_split=None
    ... )
    >>> clf = TransferClassifier(net, frozen="features.*", random_state=0)
    >>> clf = clf.fit_source(X[y < 5], y[y < 5])
    >>> clf = clf.fit(X[y >= 5][:50], y[y >= 5][:50])
    >>> clf.classes_
    array([5, 6, 7, 8, 9])
    >>> clf.predict_proba(X[y >= 5][:2]).shape
    (2, 5)
    """

    _net_class = NeuralNetClassifier
    _default_criterion = nn.CrossEntropyLoss
    _multi_output = False
    _output_kind = "classes"

    _parameter_constraints: dict = {
        **_BaseTransfer._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
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
        class_weight: dict | str | None = None,
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
        self.class_weight = class_weight

    def score(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """Return the mean accuracy on the labelled rows of ``X`` and ``y``.

        As ``ClassifierMixin.score``; with ``adapt`` set, the rows marked
        unlabelled (``y == -1``) are left out, as they have no label to compare
        with (score them with :func:`~sktransfer.prediction_entropy_scorer`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            Mean accuracy of ``self.predict(X)``.

        Raises
        ------
        ValueError
            With ``adapt`` set, when every row is unlabelled.
        """
        X, y, sample_weight = _adapt.labelled_for_score(self, X, y, sample_weight)
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True  # a 2-D indicator y
        return tags

    def _sample_weights(self, sample_weight, X, y):
        """Return ``sample_weight`` times ``class_weight`` (None: equal weights)."""
        class_weight = self.class_weight
        if class_weight == "balanced" and getattr(self, "_partial", None) is not None:
            msg = (
                "class_weight='balanced' is not supported by partial_fit, which "
                "sees one part of the data at a time (as in SGDClassifier). Pass a "
                "dict of class weights, computed once on all the labels with "
                "sklearn.utils.class_weight.compute_class_weight."
            )
            raise ValueError(msg)
        return _weights.sample_weights(sample_weight, X, class_weight=class_weight, y=y)

    @property
    def source_classes_(self) -> np.ndarray:
        """The class labels of the source task, an ndarray."""
        return self._get_pretrained().classes

    def _encode_y(self, y):
        """Encode labels as 0..n_classes-1; return them, the count and ``classes_``.

        A multilabel indicator matrix becomes float32 targets, one column per
        label, for ``BCEWithLogitsLoss``; ``_multilabel_y`` (present only
        then) tells the network about to be built.
        """
        check_classification_targets(y)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # with scikit-learn's warning
        if y.ndim == 2:
            return self._encode_multilabel(y)
        self.__dict__.pop("_multilabel_y", None)
        partial = getattr(self, "_partial", None)
        if partial is not None:
            return encode_partial_classes(self, y, partial["classes"])
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            msg = (
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class: "
                f"{classes!r}."
            )
            raise ValueError(msg)
        return encoded.astype(np.int64), len(classes), {"classes_": classes}

    def _encode_multilabel(self, y):
        """Return an indicator ``y`` as float32, its width and ``classes_``."""
        kind = type_of_target(y)
        if kind != "multilabel-indicator":
            msg = (
                f"{type(self).__name__} takes y of shape (n_samples,) or a "
                "multilabel indicator matrix of shape (n_samples, n_labels) holding "
                f"0 and 1; got a 2-D y of shape {y.shape} and type {kind!r} "
                "(multiclass-multioutput is not supported)."
            )
            raise ValueError(msg)
        if getattr(self, "_partial", None) is not None:
            msg = (
                f"{type(self).__name__}.partial_fit takes a y of class labels; a "
                "multilabel y trains with fit."
            )
            raise ValueError(msg)
        y = y.toarray() if hasattr(y, "toarray") else y
        values = np.unique(y)
        if not np.isin(values, (0, 1)).all():
            msg = (
                f"A multilabel y holds 0 and 1 (a label is absent or present); got "
                f"the values {values!r}."
            )
            raise ValueError(msg)
        self._multilabel_y = True  # for the network about to be built
        # As MLPClassifier: the labels are the columns 0..n_labels-1.
        return y.astype(np.float32), y.shape[1], {"classes_": np.arange(y.shape[1])}

    def _default_net_params(self):
        params = super()._default_net_params()
        if getattr(self, "_multilabel_y", False):
            params["criterion"] = nn.BCEWithLogitsLoss
        return params

    def _has_probabilities(self):
        """Whether the ``net`` parameter defines probabilities (for available_if)."""
        try:
            kind, criterion, nonlin = _outputs.template_kind(
                self.net, self._default_criterion
            )
        except (TypeError, ValueError):
            return True  # fit says what is wrong
        if kind == _outputs.SCORES:
            owner = type(self).__name__
            raise AttributeError(
                _outputs.no_probabilities_message(owner, criterion, nonlin)
            )
        return True

    @property
    def out_activation_(self) -> str:
        """What the fitted network outputs, hence how probabilities follow.

        ``"softmax"`` (logits, under ``CrossEntropyLoss``),
        ``"probabilities"`` (under ``NLLLoss``), ``"predict_nonlinearity"``
        (the net's callable makes probabilities) or ``"scores"`` (no
        probabilities: another criterion).
        """
        check_is_fitted(self)
        criterion = self.net_.criterion_
        # fit accepts BCEWithLogitsLoss for a multilabel y only.
        return _outputs.output_kind(
            criterion,
            self.net_.predict_nonlinearity,
            multilabel=isinstance(criterion, nn.BCEWithLogitsLoss),
        )

    def _outputs(self, X):
        """Return the network's raw outputs for ``X`` as a CPU tensor."""
        return self._raw_outputs(self._validate_X(X))

    def _raw_outputs(self, X):
        """Return the network's raw outputs for validated ``X`` as a CPU tensor."""
        with _predstore.rows(self, X) as rows:
            out = self.net_.forward(rows, training=False)
        return out[0] if isinstance(out, tuple) else out

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Return the network's outputs, the scores ``predict`` takes the argmax of.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The outputs in the order of ``classes_`` (logits under
            ``CrossEntropyLoss``). For two classes, as scikit-learn's binary
            classifiers do, the score of ``classes_[1]``: its output minus that
            of ``classes_[0]`` (the log-odds under ``CrossEntropyLoss``),
            positive where ``predict`` gives ``classes_[1]``.
        """
        out = self._outputs(X)
        scores = out.double().numpy()
        if self.out_activation_ == _outputs.SIGMOID:
            return scores  # one logit per label
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> Self:
        """Fine-tune for one epoch over the given samples.

        The first call starts as :meth:`fit` does (shared layers from the
        pretrained weights, a fresh head for all ``classes``); each later call
        continues from the current weights, with a fresh optimizer, as
        ``MLPClassifier.partial_fit`` does. ``max_epochs`` and early stopping
        do not apply: each call is one epoch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Target samples, with the source's sample shape.
        y : array-like of shape (n_samples,)
            Their labels, among ``classes``.
        classes : array-like of shape (n_classes,), default=None
            Every label that ``y`` may hold over all calls. Required on the
            first call, as in scikit-learn; may be omitted afterwards.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss, as in :meth:`fit`.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._partial_fit(X, y, classes, sample_weight=sample_weight)

    @available_if(_has_probabilities)
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Return the probability of each class for each sample.

        Available when the criterion or the net's ``predict_nonlinearity``
        defines probabilities (see ``out_activation_``): the softmax of the
        outputs under ``CrossEntropyLoss``, the outputs themselves under
        ``NLLLoss``, or what a callable ``predict_nonlinearity`` makes of them,
        checked to be probabilities with the outputs' argmax.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``; each row sums to one,
            and its largest is at the class ``predict`` gives.
        """
        return _augment.tta_average(self, self._validate_X(X), self._probabilities)

    def _probabilities(self, X):
        """Return ``predict_proba`` of validated ``X``, without test-time views."""
        out = self._raw_outputs(X)
        return _outputs.probabilities(
            out, self.out_activation_, self.net_.predict_nonlinearity
        )

    @available_if(_has_probabilities)
    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Return the log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities in the order of ``classes_`` (the log-softmax of
            the outputs under ``CrossEntropyLoss``, exact for large logits).
        """
        if self.tta_views:
            with np.errstate(divide="ignore"):
                return np.log(self.predict_proba(X))
        out = self._outputs(X)
        return _outputs.log_probabilities(
            out, self.out_activation_, self.net_.predict_nonlinearity
        )

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Return the class of each sample: the argmax of the network's outputs.

        It does not depend on a normalisation, and is the class
        :meth:`predict_proba` finds most probable, whatever the criterion.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Class labels from ``classes_``.
        """
        if self.tta_views:
            X = self._validate_X(X)
            kind = self.out_activation_
            average = (
                self._probabilities if kind != _outputs.SCORES else self._raw_scores
            )
            scores = np.asarray(_augment.tta_average(self, X, average))
            if kind == _outputs.SIGMOID:
                return (scores > 0.5).astype(np.int64)
            return self.classes_[scores.argmax(axis=1)]
        out = self._outputs(X)
        if self.out_activation_ == _outputs.SIGMOID:
            return (out > 0).numpy().astype(np.int64)  # probability above 0.5
        index = out.argmax(dim=1).numpy()
        return self.classes_[index]

    def _raw_scores(self, X):
        return self._raw_outputs(X).double().numpy()
