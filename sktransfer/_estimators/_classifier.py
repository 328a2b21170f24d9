"""TransferClassifier: label encoding and probabilities around the shared base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetClassifier
from torch import nn

from .._compat import StrOptions
from .._fit import _augment, _outputs
from .._skorch import _adapt, _predict, _weights
from . import _labels
from ._base import _BaseTransfer
from ._docstrings import fill

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self


@fill("classifier")
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

    Read more in the :ref:`User Guide <vocabulary>`.

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
        their log), scores for any other loss; :meth:`fit` checks this before
        training. ``BCEWithLogitsLoss`` and ``BCELoss`` are refused for
        single-label classes: use ``CrossEntropyLoss`` with two outputs. See
        :ref:`networks`.
    ${shared_parameters}
    adapt : {"coral", "mmd", "dann", "self_training", "adabn"} or None, default=None
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
        on every batch); ``"adabn"`` adds no term and gives the normalisation layers
        the unlabelled rows' statistics when training ends (AdaBN, Li et al. 2016).
        The unlabelled rows never reach the supervised loss; prediction needs no domain
        marker. ``None``: ``-1`` is an ordinary class label, as in every
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
    class_weight : dict, "balanced" or None, default=None
        Weights of the target's classes in the fine-tuning loss, as
        scikit-learn's classifiers take them: a dict ``{label: weight}``
        (labels not in it weigh 1), ``"balanced"`` for
        ``n_samples / (n_classes * np.bincount(y))``, or None for equal
        weights. Multiplied into ``fit``'s ``sample_weight`` (:ref:`targets`).
        With ``sample_weight``, ``"balanced"`` counts weighted samples
        (``np.bincount(y, sample_weight)``, as
        :func:`~sklearn.utils.class_weight.compute_class_weight` and
        ``LogisticRegression`` do), so a row of weight 0 counts for nothing.
        Pretraining does not use it: pass
        ``sample_weight=compute_sample_weight("balanced", y_source)`` to
        :meth:`fit_source` for that.
    ${run_parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The target's class labels.
    net_ : NeuralNetClassifier
        The fine-tuned skorch net; ``net_.history`` holds the fine-tuning
        epochs.
    out_activation_ : str
        What the fitted network outputs, hence how :meth:`predict_proba`
        follows from it: ``"softmax"`` (logits), ``"probabilities"``,
        ``"predict_nonlinearity"`` (the net's callable ``predict_nonlinearity``
        makes probabilities) or ``"scores"`` (no probabilities).
    source_classes_ : ndarray
        The source's class labels; set by :meth:`fit_source`.
    ${shared_attributes}

    See Also
    --------
    TransferRegressor : The same for continuous targets.
    fit_source : Pretrain the transfer estimator at the end of a pipeline.

    Notes
    -----
    ${notes}

    :meth:`predict` is the argmax of the network's outputs whatever the
    criterion, and :meth:`decision_function` returns those outputs;
    :meth:`predict_proba` exists only where the criterion (or a callable
    ``predict_nonlinearity``) makes them probabilities, as ``out_activation_``
    says (:ref:`networks`).

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
        """Encode labels as 0..n_classes-1; return them, the count and ``classes_``."""
        return _labels.encode_labels(self, y)

    def _default_net_params(self):
        params = super()._default_net_params()
        if getattr(self, "_multilabel_y", False):
            params["criterion"] = nn.BCEWithLogitsLoss
        return params

    def _has_probabilities(self):
        """Whether the ``net`` parameter defines probabilities (for available_if)."""
        return _outputs.has_probabilities(self, self._default_criterion)

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
        return self._raw_outputs(*self._predict_rows(X))

    def _raw_outputs(self, X, copied=False):
        """Return the network's raw outputs for validated ``X`` as a CPU tensor."""
        out = _predict.forward(self.net_, X, copied=copied)
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
        X, copied = self._predict_rows(X)
        if not self.tta_views:  # (the views would run on X after it)
            return self._probabilities(X, copied=copied)
        return _augment.tta_average(self, X, self._probabilities)

    def _probabilities(self, X, copied=False):
        """Return ``predict_proba`` of validated ``X``, without test-time views."""
        out = self._raw_outputs(X, copied=copied)
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
