"""The shared base of the transfer estimators: parameters, fit, clone protocol."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data
from skorch import NeuralNet
from torch import nn

from .._common import (
    _CHECK_X,
    _dense_rows,
    _is_2d,
    _nbytes,
    _seeded,
    _unchanged_on_error,
    _writable,
    predict_batch_size,
)
from .._compat import Interval, StrOptions, _fit_context
from .._fit import _augment, _build, _guard, _inputs, _settings, _stopping, _validation
from .._frozen_stage import _cache
from .._skorch import _adapt, _finetune, _frozen, _step, _text, _weights
from .._torch import _hf, _layers, _lora
from . import _labels, _repr, _template
from ._adapter_files import _Adapters
from ._features import TransformMixin
from ._partial import _PartialFit
from ._source import _SourceTask

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self

# "auto" caches a frozen stage whose outputs for the training set take at most
# this many bytes, or at most as much as the training set itself if that is more.
_CACHE_LIMIT = 2**30


# What training from scratch resets: fresh weights, nothing frozen, no
# fine-tuning method (compare_transfer's "scratch", make_transfer_search's).
_SCRATCH_PARAMS = {
    "pretrained": False,
    "frozen": (),
    "l2sp": 0.0,
    "l2sp_head": 0.0,
    "shared_lr_scale": 1.0,
    "unfreeze": None,
    "layer_decay": 1.0,
    "adapter": None,
    # The adapter's settings back at their defaults: without an adapter they
    # cannot act, and fit would warn that they are ignored.
    "lora_rank": 8,
    "lora_alpha": None,
    "lora_dropout": 0.0,
    "lora_targets": None,
}


class _BaseTransfer(TransformMixin, _PartialFit, _SourceTask, _Adapters, BaseEstimator):
    """Base class of the transfer estimators; not for direct use."""

    # Set by the subclasses.
    _net_class: type[NeuralNet]
    _default_criterion: type[nn.Module]
    _multi_output: bool
    _output_kind: str

    _parameter_constraints: dict = {
        # Checked by _template, which gives the precise TypeError.
        "net": "no_validation",
        "head": [str, list, tuple, None],
        "frozen": [str, list, tuple],
        "pretrained": ["boolean"],
        "source_params": [dict, None],
        "freeze_bn_stats": ["boolean"],
        "cache_frozen": [StrOptions({"auto"}), "boolean"],
        "l2sp": [Interval(Real, 0, None, closed="left")],
        "l2sp_head": [Interval(Real, 0, None, closed="left")],
        "shared_lr_scale": [Interval(Real, 0, None, closed="neither")],
        "layer_decay": [Interval(Real, 0, None, closed="neither")],
        "unfreeze": [list, tuple, None],
        "adapter": "no_validation",  # None, "lora" or a peft config: _lora
        "lora_rank": [Interval(Integral, 1, None, closed="left")],
        "lora_alpha": [Interval(Real, 0, None, closed="neither"), None],
        "lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "lora_targets": [str, list, tuple, None],
        "autocast": [StrOptions({"bfloat16"}), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list, None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "augment": "no_validation",  # checked by _augment.check_augment
        "mixup_alpha": [Interval(Real, 0, None, closed="left")],
        "cutmix_alpha": [Interval(Real, 0, None, closed="left")],
        "tta_views": [Interval(Integral, 0, None, closed="left")],
        "cache_views": [Interval(Integral, 1, None, closed="left"), None],
        "adapt": [StrOptions(set(_adapt.METHODS)), None],
        "adapt_weight": [Interval(Real, 0, None, closed="left")],
        "adapt_layer": [str, None],
        "adapt_threshold": [Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.net = net
        self.head = head
        self.frozen = frozen
        self.pretrained = pretrained
        self.source_params = source_params
        self.freeze_bn_stats = freeze_bn_stats
        self.cache_frozen = cache_frozen
        self.l2sp = l2sp
        self.l2sp_head = l2sp_head
        self.shared_lr_scale = shared_lr_scale
        self.layer_decay = layer_decay
        self.unfreeze = unfreeze
        self.adapter = adapter
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.autocast = autocast
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.hidden_layer_sizes = hidden_layer_sizes
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.augment = augment
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.tta_views = tta_views
        self.cache_views = cache_views
        self.adapt = adapt
        self.adapt_weight = adapt_weight
        self.adapt_layer = adapt_layer
        self.adapt_threshold = adapt_threshold
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ public

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> Self:
        """Fine-tune on the target task.

        The shared layers start from the pretrained weights (from
        :meth:`fit_source`, or from the module instance held by ``net``), the
        head is created afresh for the target's outputs, and the parameters
        matching ``frozen`` are not updated. Without pretrained weights the
        network trains from scratch. The pretrained weights are never modified.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Target samples, on which the pretrained network runs (the source's
            sample shape, or another one for a network that takes it); the
            source's columns in the source's order, if it had names. They
            reach the network in the dtype it takes: integer (and bool)
            arrays as int64 for a network with an ``nn.Embedding`` or
            ``nn.EmbeddingBag`` (token ids, category codes), anything else
            in the floating dtype of the network's weights (float32, or
            float64 for a float64 module). A conversion that would change
            values (integers above ``2**24`` to float32) is a ValueError.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Target labels or targets. With ``adapt`` set, ``-1`` (classifier)
            or NaN (regressor) marks the unlabelled rows, which never reach
            the supervised loss (see :ref:`adaptation`).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the training loss: each mini-batch's loss
            is the weighted mean ``sum(w * loss) / sum(w)`` of its per-sample
            losses, as in ``MLPClassifier``. None weighs samples equally.
            Routed by ``set_fit_request(sample_weight=True)``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        _inputs.refuse_dataset(X, y)
        _augment.check_augment(self.augment, type(self).__name__)
        _augment.check_tta(self)
        with _unchanged_on_error(self):
            X = _text.encode_inputs(self, X, fitting=True)  # texts: _text.py
            y, unlabelled = _adapt.split_rows(self, y)
            X, y = validate_data(
                self,
                X,
                y,
                **_CHECK_X,
                multi_output=self._multi_output or _is_2d(y),
            )
            X = _writable(X)
            if unlabelled is None:
                y_enc, n_outputs, fitted = self._encode_y(y)
                weights = self._sample_weights(sample_weight, X, y)
            else:  # the labelled rows define the task; the others are marked
                y_enc, n_outputs, fitted = self._encode_y(y[~unlabelled])
                y_enc = _adapt.with_unlabelled(y_enc, unlabelled)
                weights = _adapt.labelled_weights(self, sample_weight, X, y, unlabelled)
            _stopping.check_split(self, y_enc, fitted.get("classes_"))
            pretrained = getattr(self, "_pretrained", None)
            _inputs.check_feature_names(self, pretrained)
            _labels.check_kept_head(self, pretrained, fitted.get("classes_"))
            if self.adapter is not None and not self.pretrained:
                msg = (
                    f"adapter={self.adapter!r} trains a small update of the "
                    "pretrained weights and freezes them, but pretrained=False "
                    "starts from fresh ones: the random base would stay frozen. "
                    "Set adapter=None with pretrained=False (in a grid search, put "
                    "them in separate sub-grids)."
                )
                raise ValueError(msg)
            if self.l2sp and not self._has_source_weights():
                if not self.pretrained:
                    msg = (
                        f"l2sp={self.l2sp!r} pulls the shared weights toward the "
                        "pretrained ones, but pretrained=False starts from fresh "
                        "weights. Set l2sp=0 with pretrained=False (in a grid "
                        "search, put them in separate sub-grids)."
                    )
                else:
                    msg = (
                        f"l2sp={self.l2sp!r} pulls the shared weights toward "
                        f"pretrained ones, but this {type(self).__name__} has none: "
                        "call fit_source(X, y) first, pass a module instance with "
                        "trained weights as net, or set l2sp=0."
                    )
                raise ValueError(msg)
            with _seeded(self.random_state, "target"), _frozen.fit_scope():
                with _inputs.naming_sample_shapes(pretrained, X):
                    net, (shared, specific) = self._build_net(
                        X, n_outputs, phase="target"
                    )
                dtype = _inputs.input_dtype(net.module_, X.dtype)
                X = _writable(_inputs.as_input(X, dtype))
                _, y_enc = self._scale_y(
                    net, _dense_rows(X, 8), X, y_enc, fitted, weights
                )
                self._announce("Fine-tuning on the target task", X, n_outputs)
                adapter = _lora.report(net.module_, self)
                split, cache = self._frozen_stage(net, X)
                _weights.install(net, weights)
                if unlabelled is not None:
                    head = _layers.resolve_head(net.module_, self.head)
                    _adapt.install(self, net, head, split)
                with (
                    _finetune.l2sp_penalty(
                        net, shared, specific, self.l2sp, self.l2sp_head
                    ),
                    _finetune.autocast(self.autocast, net.device, net),
                    _validation.encoded(net, X, fitted, n_outputs, split, cache),
                    _guard.training(
                        self,
                        net,
                        "target",
                        X.shape[1:],
                        fitted,
                        probe=_dense_rows(X, 8),
                    ),
                ):
                    if split is None:
                        net.partial_fit(X, y_enc)
                    else:
                        size = predict_batch_size(net, X.shape[0])
                        Z = split.outputs(
                            X,
                            batch_size=size,
                            device=net.device,
                            keep_on=cache["device"],
                            report=cache,
                        )
                        with split.training_rest(net):
                            net.partial_fit(Z, y_enc)
            for name, value in fitted.items():
                setattr(self, name, value)
            self._sample_shape = tuple(X.shape[1:])
            self._input_dtype = dtype
            self.frozen_cache_ = cache
            self.head_ = _layers.resolve_head(net.module_, self.head)
            net.module_.eval()  # as prediction runs it, which then changes nothing
            self.adapter_ = adapter
            self.net_ = net
        return self

    # ------------------------------------------------------- scikit-learn API

    def __sklearn_is_fitted__(self):
        # Pretraining alone does not make the estimator fitted.
        return hasattr(self, "net_")

    def __sklearn_clone__(self):
        # Pretrained weights are prior knowledge, like a hyper-parameter: clones
        # (cross-validation folds, grid-search candidates) fine-tune from them.
        new = super().__sklearn_clone__()
        pretrained = getattr(self, "_pretrained", None)
        if pretrained is not None:
            new._pretrained = pretrained
            if "distributed" in sys.modules:  # else no Dask backend can be active
                from .._pretrained import _dask

                _dask.ship(pretrained)  # once, under joblib's Dask backend
        return new

    def __repr__(self, N_CHAR_MAX=700):  # noqa: N803 (scikit-learn's name)
        return _repr.estimator_repr(self, BaseEstimator.__repr__, N_CHAR_MAX)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        device = self.net.device if isinstance(self.net, NeuralNet) else "cpu"
        # CUDA kernels (atomics in backward passes) are not bit-reproducible.
        tags.non_deterministic = str(device).startswith("cuda")
        tags.input_tags.three_d_array = True  # image arrays (N x C x H x W) too
        tags.input_tags.sparse = True  # densified a batch at a time
        if _hf.as_spec(self.net) is not None:  # texts, tokenized inside (_text.py)
            tags.input_tags.string = True
        return tags

    def set_params(self, **params: Any) -> Self:
        """Set the parameters of this estimator.

        Nested parameters of the skorch template are set as ``net__<name>``,
        e.g. ``net__lr`` or ``net__module__hidden_layer_sizes``; they need
        ``net`` to be a skorch net.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : object
            The estimator.
        """
        nested = sorted(key for key in params if key.startswith("net__"))
        net = params.get("net", self.net)
        if nested and isinstance(net, str):  # a model directory: _hf.py
            msg = (
                f"Cannot set {', '.join(nested)}: net is the path {net!r}. To tune "
                f"the settings of a Hugging Face net, pass net=HuggingFaceNet({net!r})."
            )
            raise ValueError(msg)
        if nested and not isinstance(net, (NeuralNet, _hf.HuggingFaceNet)):
            raise ValueError(_settings.nested_error(self, nested, net))
        return super().set_params(**params)

    # --------------------------------------------------------------- internals

    def _sample_weights(self, sample_weight, X, y):
        """Return the training weight of each sample (None: equal weights)."""
        return _weights.sample_weights(sample_weight, X)

    def _scale_y(self, net, rows, data, y_enc, fitted, weights):
        """Return the phase's data and targets as the loss takes them (regressor)."""
        return data, y_enc

    def _has_source_weights(self):
        """Whether ``fit`` starts from pretrained weights rather than from scratch."""
        if not self.pretrained:
            return False
        if getattr(self, "_pretrained", None) is not None:
            return True
        module = self.net.module if isinstance(self.net, NeuralNet) else self.net
        return isinstance(module, nn.Module) or _hf.as_spec(self.net) is not None

    def _default_net_params(self):
        """Return the settings of a net built around a module or the default MLP."""
        return _template.default_net_params(self._default_criterion)

    def _template(self):
        """Return a fresh, unfitted skorch net built from ``net``."""
        net = _template.net_template(self)
        layout = getattr(self, "_keyword_layout", None)  # dict X: _text.py
        return net if layout is None else _text.keyword_net(net, layout)

    def _build_net(self, X, n_outputs, *, phase):
        """Build and initialise the skorch net for one phase (see ``_build``)."""
        return _build.build_net(self, X, n_outputs, phase=phase)

    def _frozen_stage(self, net, X):
        """Split off the frozen leading stage of ``net.module_`` if it is cached.

        Returns the split (None: fine-tune the whole network) and the report
        kept as ``frozen_cache_``.
        """
        unfreeze = dict(net.callbacks_).get(_finetune.UNFREEZE_CALLBACK)
        schedule = () if unfreeze is None else unfreeze.schedule
        later = {name: epoch for epoch, names in schedule for name in names}

        record = getattr(self, "_pretrained", None)
        reuse = None
        if record is not None and self.pretrained:  # its weights were loaded
            head = _layers.resolve_head(net.module_, self.head)
            reuse = (record, head, (self.frozen, self.head, self.freeze_bn_stats))

        def plan_stage(cache_frozen, limit):
            return _cache.plan(
                net.module_,
                X,
                unfrozen_later=later,
                net=net,
                net_class=_step.trusted_class(net, self._net_class),
                cache_frozen=cache_frozen,
                limit=limit,
                device=net.device,
                verbose=self.verbose,
                reuse=reuse,
            )

        limit = max(_CACHE_LIMIT, _nbytes(X))
        return _augment.plan(self, net, X, plan_stage=plan_stage, limit=limit)

    @staticmethod
    def _module_sizes(net, X, n_outputs):
        """``module__n_features_in`` / ``module__n_outputs`` the module accepts."""
        return _template.module_sizes(net, X, n_outputs)

    def _announce(self, what, X, n_outputs):
        """Label the epoch table that skorch prints at ``verbose > 0``."""
        if self.verbose:
            kind = self._output_kind
            n_samples = X.shape[0] if hasattr(X, "shape") else len(X)
            print(f"[sktransfer] {what}: {n_samples} samples, {n_outputs} {kind}")

    def _validate_X(self, X):
        """Check ``X`` for prediction against what ``fit`` saw."""
        X = _text.encode_inputs(self, X)  # texts: _text.py
        return _inputs.validated_rows(self, X)

    def _predict_rows(self, X):
        """Return ``X`` checked for prediction, and whether it is a copy of ``X``."""
        rows = self._validate_X(X)
        # Converted to the network's dtype, they are a copy already.
        return rows, isinstance(X, np.ndarray) and X.dtype != rows.dtype
