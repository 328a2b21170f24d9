"""The docstring blocks that TransferClassifier and TransferRegressor share.

Both estimators take the same parameters but ``net`` and one of their own
(``class_weight``, ``normalize_y``), and have the same fitted attributes but
a few. Each block is written once here and put into each class docstring by
:func:`fill`, as imbalanced-learn's ``Substitution`` does: the class docstring
stays the first statement of the class, a literal with ``${name}`` fields.
A block mentions the estimator's kind only through ``$mlp`` (the
scikit-learn MLP it follows), ``$outputs`` and ``$kind``.

How things work inside (the cache's proof, the probe of the outputs, the
weighted loss) is in the user guide, which each block links to; a docstring
says what a parameter does and what it accepts.
"""

from __future__ import annotations

from string import Template

_SHARED_PARAMETERS = """\
head : "auto", str, list or tuple of str, or None, default="auto"
    The target-specific layers: submodule names as ``module.named_modules()``
    gives them. They are not transferred but initialised afresh for the
    target, and the last ``nn.Linear`` among them is resized to the number of
    $outputs. ``"auto"`` is the output layer by the conventions of
    torchvision and timm: the ``nn.Linear`` that timm's ``get_classifier()``
    returns, else the last ``nn.Linear`` in a top-level ``fc``,
    ``classifier``, ``head`` or ``heads`` (``"fc"`` for a ResNet,
    ``"classifier.1"`` for a MobileNetV2, ``"heads.head"`` for torchvision's
    ViT), else the module's last ``nn.Linear`` layer (``head_`` tells which).
    ``None`` transfers every weight (source and target must then have as many
    $outputs). See :ref:`vocabulary`.
frozen : str, list or tuple of str, default=()
    Glob patterns (``fnmatch``; ``*`` also matches dots) over parameter names
    as ``module.named_parameters()`` gives them, e.g. ``"features.*"``, or over
    submodule names (``module.named_modules()``, e.g. ``"features"``, ``"0"``),
    a submodule standing for all its parameters and its normalisation layers,
    even one without parameters such as a top-level
    ``BatchNorm1d(affine=False)``, whose statistics are then held (see
    ``freeze_bn_stats``). Matching parameters are not updated by :meth:`fit`,
    nor are shared parameters that arrive with ``requires_grad=False`` (a
    module frozen by hand); the head, initialised afresh, trains unless
    matched. Pretraining trains every parameter. A pattern that matches nothing
    is a ValueError naming the nearest parameters. Freezing lasts for
    :meth:`fit` only: afterwards every parameter of ``net_.module_`` has the
    ``requires_grad`` it arrived with.
pretrained : bool, default=True
    Start :meth:`fit` from the pretrained weights (``True``) or from fresh
    ones (``False``: every layer initialised as the module's constructor
    does; a module instance's weights are re-initialised with
    ``reset_parameters``, a Hugging Face model's as a model built from its
    config, with Hugging Face's own initialisation). The pretrained weights
    are kept either way, so
    ``GridSearchCV(est, {"pretrained": [True, False], ...})`` chooses between
    transfer and scratch (the name timm and torchvision use). See
    :ref:`few_labels`.
source_params : dict, default=None
    skorch settings used only while pretraining, e.g.
    ``{"max_epochs": 5, "lr": 1e-2}``, without the ``net__`` prefix; they
    update the ``net`` template for :meth:`fit_source`.
freeze_bn_stats : bool, default=True
    Frozen means feature extraction: run every layer whose parameters are all
    frozen, in the sense of ``frozen``, in evaluation mode while fine-tuning,
    as Keras's ``base_model(x, training=False)`` and timm's
    ``forward_features`` do. Its normalisation layers keep the pretrained
    running statistics, and its dropout and stochastic depth are off, so the
    frozen body computes the same while training as while predicting and can be
    cached (``cache_frozen``). A layer without parameters counts as frozen when
    its nearest enclosing block with parameters is, or when a ``frozen``
    pattern names it or a submodule holding it: a dropout between the pooled
    features and the head belongs to the trained part and stays active.
    ``False`` keeps training-mode randomness and batch statistics inside frozen
    layers, as skorch's ``Freezer`` callback does; a frozen stage with active
    dropout or batch statistics is then not cached. See
    :doc:`/user_guide/frozen_stage`.
cache_frozen : "auto" or bool, default="auto"
    Compute the frozen layers once per :meth:`fit` instead of once per epoch,
    when they form the network's leading stage and that stage computes the
    same while training as while predicting; the rest of the network then
    trains on the stage's outputs, to the same weights. ``"auto"`` caches
    when that is provably safe and the outputs take at most the size of ``X``
    or 1 GiB; ``True`` caches whatever the size or raises a ValueError saying
    why it cannot; ``False`` never caches. ``frozen_cache_`` reports what
    :meth:`fit` did. See :doc:`/user_guide/frozen_stage`.
l2sp : float, default=0.0
    Strength of the L2-SP penalty (Li et al., ICML 2018): :meth:`fit` adds
    ``l2sp / 2 * sum ||w - w_source||^2`` over the trainable shared
    parameters to the training loss, keeping them near the pretrained weights
    rather than fixed. Needs pretrained weights; ``0`` adds nothing. See
    :ref:`fine_tuning`.
l2sp_head : float, default=0.0
    Plain L2 penalty ``l2sp_head / 2 * sum ||w||^2`` on the head's trainable
    parameters, the paper's second term.
shared_lr_scale : float, default=1.0
    The shared parameters train with the learning rate times this factor and
    the head with the learning rate itself (discriminative learning rates),
    within each of skorch's optimizer parameter groups, for any torch
    optimizer.
layer_decay : float, default=1.0
    Layer-wise learning-rate decay (timm's ``param_groups_layer_decay``): a
    shared parameter ``d`` layers below the head trains at the head's
    learning rate times ``shared_lr_scale * layer_decay ** d``. Layers are
    the submodules holding parameters, in ``named_parameters()`` order; a
    normalisation layer counts with the layer before it. ``1.0`` changes
    nothing.
unfreeze : sequence of (int, str or sequence of str) pairs, default=None
    Gradual unfreezing: when each given epoch begins (the first epoch is 1),
    the parameters matching the glob patterns become trainable, e.g.
    ``((3, "features.2.*"), (6, "features.*"))``. BatchNorm layers held by
    ``freeze_bn_stats`` train again once their parameters unfreeze.
adapter : {"lora"}, peft config or None, default=None
    Parameter-efficient fine-tuning through Hugging Face ``peft``
    (``pip install ".[peft]"`` from a clone): ``"lora"`` puts low-rank adapters
    (LoRA, Hu et al., ICLR 2022) on the shared layers, a peft config object
    (e.g. ``peft.LoraConfig(r=4, use_dora=True)`` or ``peft.IA3Config``)
    another method of peft's that injects into layers. Every pretrained
    weight stays fixed; the adapters and the head train. With ``"lora"``,
    the adapted network starts out computing what the pretrained one does
    (its ``B`` factors start at zero). See ``adapter_``, ``save_adapter``,
    ``load_adapter`` and ``merge``. Cannot be combined with ``unfreeze``.
    The adapters train at ``lr`` (times ``shared_lr_scale``): give about ten
    times the rate that fine-tunes the whole network (1e-3 for
    all-MiniLM-L6-v2, fully fine-tuned at 1e-4), as the LoRA paper does.
    None fine-tunes the weights themselves.
lora_rank : int, default=8
    The rank ``r`` of the LoRA updates (``adapter="lora"``).
lora_alpha : float or None, default=None
    LoRA's scale: the updates are multiplied by ``lora_alpha / lora_rank``.
    None is ``lora_alpha = lora_rank``, a scale of 1 at every rank, so a
    search over ``lora_rank`` does not change the step size with it (at
    rank 8 this is the former default, ``lora_alpha=8``). A positive number
    fixes ``alpha`` instead.
lora_dropout : float, default=0.0
    Dropout on the inputs of the LoRA updates while training.
lora_targets : str, sequence of str or None, default=None
    Glob patterns over the shared layers' submodule names
    (``fnmatch``, ``*`` also matches dots) naming the layers to adapt,
    e.g. ``"*attention*"``. None adapts every ``nn.Linear`` and
    ``nn.Conv2d`` of the shared layers that ``frozen`` does not hold.
    Normalisation layers matched are not adapted; a layer peft cannot
    adapt (e.g. ``nn.LSTM``), the head or a frozen layer raises a
    ValueError. peft adapts a grouped ``nn.Conv2d`` only at a rank that is
    a multiple of its ``groups``. The ``lora_*`` settings act with
    ``adapter="lora"``; with ``adapter=None`` none does, and with a peft
    config its own fields (``r``, ``lora_alpha``, ``lora_dropout``, and
    ``target_modules`` where it sets them) are used: ``fit`` then warns
    (``UserWarning``) for each ``lora_*`` setting away from its default.
autocast : {"bfloat16"} or None, default=None
    Mixed precision for fine-tuning: ``"bfloat16"`` runs the forward and
    backward passes under :func:`torch.autocast` (matrix products and
    convolutions in bfloat16; weights, gradients and optimizer in float32),
    on the CPU or a GPU that supports bfloat16. Pretraining and prediction
    stay in float32. ``None`` trains in float32.
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the target data (stratified for a
    classifier), stop when its loss has not improved by 1e-4 for
    ``n_iter_no_change`` epochs and restore the weights of the best epoch, as
    :class:`~sklearn.neural_network.$mlp` does. It replaces any
    ``EarlyStopping`` of the template and sets its ``train_split``.
    ``False`` keeps the template as it is (the default settings stop on the
    training loss).
validation_fraction : float, default=0.1
    Share of the target data held out with ``early_stopping=True``; each part
    must hold a sample of every class, else :meth:`fit` raises a
    ``ValueError``.
n_iter_no_change : int, default=10
    Epochs without improvement before stopping: of the validation loss with
    ``early_stopping=True``, of the training loss of the default settings
    otherwise (a skorch template keeps its own callbacks).
hidden_layer_sizes : tuple of int, default=None
    Width of each hidden layer of the default :class:`~sktransfer.MLP`, as in
    ``$mlp``; ``None`` is ``(100,)``, or what the template sets. Only for a
    network whose module class takes ``hidden_layer_sizes``; otherwise a
    ValueError.
lr : float, default=None
    Learning rate of both phases; ``None`` is the default network's ``1e-3``,
    or the template's (its ``optimizer__lr`` if it sets one, as skorch reads
    it first, else its ``lr``). A value overrides both of the template's
    names, with a warning when its ``optimizer__lr`` differs, so that a
    search over ``lr`` changes the rate that trains (``shared_lr_scale`` and
    ``layer_decay`` multiply it for the shared layers);
    ``source_params={"lr": ...}`` overrides it while pretraining.
max_epochs : int, default=None
    Most epochs of each phase; ``None`` is the default network's ``200``
    (with early stopping), or the template's. A value overrides the
    template's.
batch_size : int, default=None
    Samples per batch; ``None`` is the default network's ``200``, or the
    template's. A value overrides the template's ``batch_size`` and its
    ``iterator_train__batch_size`` / ``iterator_valid__batch_size`` (which
    skorch reads first), with a warning when they differ. These four reach the
    network in both phases (``source_params`` still wins while pretraining),
    so ``GridSearchCV`` tunes them on the default network; any other setting
    of it is reachable from its template, ``sktransfer.default_net('$kind')``,
    passed as ``net``. See :ref:`networks`.
augment : callable or None, default=None
    Applied to each training batch of :meth:`fit` as a whole tensor of shape
    ``(batch_size, ...)``, returning the augmented batch: any callable on
    batched tensors, e.g. a ``kornia.augmentation`` pipeline or a
    ``torchvision.transforms.v2`` one. Never applied to validation batches or
    prediction (except the ``tta_views``). It draws its random numbers from a
    stream of its own, seeded by ``random_state``. It must be picklable (a
    module-level function or a class instance, not a lambda) and must not
    change its input in place. With ``augment``, a frozen stage is not cached
    unless ``cache_views`` is set. See :ref:`augmentation`.
mixup_alpha : float, default=0.0
    MixUp (Zhang et al., ICLR 2018): when positive, each training batch
    (after ``augment``) is mixed with a shuffled copy of itself,
    ``lam * x_i + (1 - lam) * x_j`` with
    ``lam ~ Beta(mixup_alpha, mixup_alpha)``, and the loss is
    ``lam * loss(y_i) + (1 - lam) * loss(y_j)``.
cutmix_alpha : float, default=0.0
    CutMix (Yun et al., ICCV 2019): when positive, a box covering a fraction
    ``1 - lam`` of each image is pasted from the shuffled copy, and the loss
    weighted by the box's actual area. Images only (samples of shape
    ``(..., height, width)``). With both alphas positive, each batch uses one
    of the two with even odds (as timm's ``Mixup``).
tta_views : int, default=0
    Test-time augmentation: the predictions ($tta) are averaged over the
    plain input and this many views made by ``augment``, seeded by
    ``random_state`` (the same answer for the same ``X`` on every call). The
    views are drawn for the rows of a call together, so a row's averaged
    prediction depends on the rows predicted with it; use ``0`` where
    predictions of subsets must agree (``cross_val_predict`` against one
    call). ``0`` is plain prediction, exactly.
cache_views : int or None, default=None
    Precompute this many augmented views of the training set once per
    :meth:`fit` and train on one view per sample, drawn afresh for every
    batch; when the frozen layers form a cacheable leading stage, the views go
    through it once, so each epoch costs what the trainable rest costs. The
    views take ``cache_views`` times the size of the stage's outputs (or of
    ``X``), reported in ``frozen_cache_``, within the bounds of
    ``cache_frozen``. Needs ``augment``; not with ``mixup_alpha``,
    ``cutmix_alpha`` or a validation split.
"""

_RUN_PARAMETERS = """\
random_state : int, RandomState instance or None, default=None
    Seeds weight initialisation, shuffling and dropout (torch's global RNG is
    restored afterwards). ``None`` uses torch's global RNG. The same seed
    gives the same weights and predictions on the CPU with the same number of
    torch threads (``torch.get_num_threads()``): float sums split over another
    number of threads round differently.
verbose : int, default=0
    ``0`` is silent. ``1`` prints, for pretraining and for fine-tuning, a
    header, skorch's epoch table and one summary line: epochs run, why
    training stopped, the best loss and the time taken. ``2`` adds skorch's
    ``ProgressBar`` inside each epoch. Overrides the template's ``verbose``.
"""

_SHARED_ATTRIBUTES = """\
n_features_in_ : int
    Number of features seen during :meth:`fit` (the channels, for images).
feature_names_in_ : ndarray of shape (`n_features_in_`,)
    Feature names seen during :meth:`fit`, when ``X`` has string column names.
source_feature_names_in_ : ndarray or None
    Column names seen by :meth:`fit_source` (None without names).
    :meth:`fit` refuses other columns or another order.
head_ : tuple of str
    The submodules that :meth:`fit` rebuilt for the target (what ``head``
    resolved to), e.g. ``("fc",)`` for a ResNet.
adapter_ : dict or None
    With ``adapter``: ``"layers"`` (the adapted layers' names),
    ``"n_adapter_parameters"``, ``"n_head_parameters"``,
    ``"n_trainable_parameters"`` (their sum), ``"n_parameters"`` (the
    network's, adapters excluded), ``"trainable_share"``, and the
    ``"lora_rank"``, ``"lora_alpha"`` and ``"scaling"`` (their ratio, the
    factor of each update) the adapted layers use: a number, a dict by
    layer where they differ, or None for an adapter without them (IA3).
    None without.
    See :ref:`adapters`.
frozen_cache_ : dict
    What :meth:`fit` did with the frozen layers: ``"cached"`` (bool),
    ``"stage"`` (the traced node the network was cut after, or None),
    ``"nbytes"`` (the size of the cached outputs, or of the precomputed views),
    ``"device"`` (where they were kept), ``"reason"`` (why they were not
    cached, or None), ``"views"`` (``cache_views`` when views were precomputed,
    else None) and ``"outputs"``: ``"computed"``, or ``"reused"`` (``"partly
    reused"``: some rows) from earlier fits of this process that fine-tuned from
    the same pretrained record (a clone's: a search's candidates and folds) with
    the same frozen stage, row by row (see :func:`sktransfer.frozen_store_info`),
    or None when not cached. A
    cached fit adds ``"digest_seconds"``, ``"compute_seconds"`` (0 when reused)
    and ``"store"`` (the store's report). Prediction runs the whole fitted
    network and changes nothing of the estimator. See
    :doc:`/user_guide/frozen_stage`.
source_weights_ : dict of str to torch.Tensor
    The pretrained ``state_dict`` (CPU tensors); set by :meth:`fit_source` or
    :meth:`load_source`.
source_history_ : list of dict
    skorch's history of the pretraining epochs.
"""

_NOTES = """\
Pretrained weights are prior knowledge rather than fitted state:
:func:`sklearn.base.clone` keeps them, so ``cross_val_score`` and
``GridSearchCV`` fine-tune every fold and candidate from the same pretrained
weights and never pretrain again (:ref:`vocabulary`). A fit is right or stops
with a precise error, and a failed fit leaves the estimator as it was: what
is checked is listed in :ref:`checks`; what cannot be checked, in
:ref:`pitfalls`.
"""

_KINDS = {
    "classifier": {
        "mlp": "MLPClassifier",
        "outputs": "classes",
        "kind": "classifier",
        "tta": "``predict_proba``, ``predict`` and ``predict_log_proba``; "
        "``decision_function`` is never averaged",
    },
    "regressor": {
        "mlp": "MLPRegressor",
        "outputs": "targets",
        "kind": "regressor",
        "tta": ":meth:`predict`",
    },
}


def _indent(block):
    """Indent a block to the level of a class docstring's sections."""
    lines = block.splitlines(True)
    return "".join(f"    {line}" if line.strip() else line for line in lines)


def blocks(kind):
    """Return the shared blocks for ``kind``, indented for a class docstring.

    Parameters
    ----------
    kind : {"classifier", "regressor"}
        The estimator the blocks are for.

    Returns
    -------
    blocks : dict of str to str
        ``shared_parameters``, ``run_parameters``, ``shared_attributes`` and
        ``notes``, each starting at the first line's indentation (so that it
        replaces a ``${name}`` field that stands on a line of its own) and
        without a trailing newline.
    """
    words = _KINDS[kind]
    texts = {
        "shared_parameters": _SHARED_PARAMETERS,
        "run_parameters": _RUN_PARAMETERS,
        "shared_attributes": _SHARED_ATTRIBUTES,
        "notes": _NOTES,
    }
    return {
        name: _indent(Template(text).substitute(words)).strip("\n").lstrip()
        for name, text in texts.items()
    }


def fill(kind):
    """Return a class decorator that puts the shared blocks into its docstring.

    Parameters
    ----------
    kind : {"classifier", "regressor"}
        The estimator the blocks are for.

    Returns
    -------
    decorator : callable
        Takes a class whose docstring has ``${shared_parameters}``,
        ``${run_parameters}``, ``${shared_attributes}`` and ``${notes}``
        fields, each on a line of its own, and returns it with the blocks in.
    """

    def decorate(cls):
        cls.__doc__ = Template(cls.__doc__).substitute(blocks(kind))
        return cls

    return decorate
