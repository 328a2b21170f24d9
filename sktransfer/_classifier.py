"""TransferClassifier: label encoding and probabilities around the shared base."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetClassifier
from torch import nn

from . import _outputs
from ._base import _BaseTransfer
from ._partial import encode_partial_classes

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


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
    net : NeuralNetClassifier, torch.nn.Module class or instance, or None, \
            default=None
        The network. A skorch ``NeuralNetClassifier`` is an unfitted template:
        it is cloned, never changed, and its settings are reachable as
        ``net__lr``, ``net__module__<name>``, ... A module class or instance is
        wrapped in a ``NeuralNetClassifier`` with the defaults below; an
        instance's own weights are the pretrained weights. ``None`` uses
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
        them is resized to the number of classes. ``"auto"`` is the module's
        last ``nn.Linear`` layer. ``None`` transfers every weight (the source
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
    autocast : {"bfloat16"} or None, default=None
        Mixed precision for fine-tuning: ``"bfloat16"`` runs the forward and
        backward passes under :func:`torch.autocast` (matrix products and
        convolutions in bfloat16; weights, gradients and optimizer in float32),
        on the CPU or a GPU that supports bfloat16. Pretraining and
        prediction stay in float32. ``None`` trains in float32.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and dropout (torch's global RNG
        is restored afterwards). ``None`` uses torch's global RNG.
    verbose : int, default=0
        ``0`` is silent; ``1`` prints skorch's epoch table of pretraining and
        fine-tuning, each under a header. Overrides the template's ``verbose``.

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

    @property
    def source_classes_(self) -> np.ndarray:
        """The class labels of the source task, an ndarray."""
        return self._get_pretrained().classes

    def _encode_y(self, y):
        """Encode labels as 0..n_classes-1; return them, the count and ``classes_``."""
        check_classification_targets(y)
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
        return _outputs.output_kind(
            self.net_.criterion_, self.net_.predict_nonlinearity
        )

    def _outputs(self, X):
        """Return the network's raw outputs for ``X`` as a CPU tensor."""
        X = self._validate_X(X)
        out = self.net_.forward(X, training=False)
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
        scores = self._outputs(X).double().numpy()
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def partial_fit(
        self, X: ArrayLike, y: ArrayLike, classes: ArrayLike | None = None
    ) -> TransferClassifier:
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

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._partial_fit(X, y, classes)

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
        out = self._outputs(X)
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
        index = self._outputs(X).argmax(dim=1).numpy()
        return self.classes_[index]
