"""Few labels, best model: the linear probe and one search over every option.

:func:`linear_probe` is the standard strong baseline with few labels: a
linear model on the standardised features of the pretrained network, its L2
strength chosen by cross-validation on the training labels (Kornblith et al.,
"Do Better ImageNet Models Transfer Better?", CVPR 2019; Radford et al.,
CLIP, ICML 2021). :func:`make_transfer_search` lets scikit-learn's
:class:`~sklearn.model_selection.GridSearchCV` choose between training from
scratch, fine-tuning settings and that probe, with a proper scoring rule.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone, is_classifier
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from .._compat import L2_LOGISTIC_CV
from .._estimators._base import _SCRATCH_PARAMS, _BaseTransfer
from .._estimators._features import PretrainedFeatures
from .._estimators._pipeline import WeightedPipeline
from .._skorch import _text
from .._torch import _hf, _layers

__all__ = ["linear_probe", "make_transfer_search"]

# The grid of L2 strengths, as LogisticRegressionCV's Cs=10 but twice as fine:
# 1e-4 ... 1e4, two values per decade (RidgeCV's alphas are their inverses).
_CS = tuple(float(c) for c in np.logspace(-4, 4, 17))
_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))

# Folds of the probe's own choice of C on the training labels.
_PROBE_CV = 3


class _AtMostKFold(StratifiedKFold):
    """Stratified k-fold with fewer folds when no class has ``n_splits`` samples.

    The linear probe picks its L2 strength by cross-validation on the
    training labels, which may hold 2 samples per class: then it uses 2
    folds instead of refusing (scikit-learn's ``StratifiedKFold`` raises when
    every class has fewer samples than folds).
    """

    def _folds(self, y):
        """Return the stratified k-fold used on labels ``y``."""
        labels, counts = np.unique(np.asarray(y), return_counts=True)
        if counts.max() < 2:
            msg = (
                "The linear probe (and, on texts, the TF-IDF baseline) chooses its "
                "L2 strength by cross-validation on its training labels and needs "
                "2 samples of some class, got one sample of each of the "
                f"{len(labels)} classes. Give it more labels, leave the probe out "
                "(compare_transfer(..., linear_probe=False), "
                "make_transfer_search(..., probe=False) on arrays), or let such "
                "candidates rank last (make_transfer_search(..., "
                "error_score=np.nan))."
            )
            raise ValueError(msg)
        k = int(min(self.n_splits, max(2, counts.max())))
        return StratifiedKFold(k, shuffle=self.shuffle, random_state=self.random_state)

    def split(self, X, y, groups=None):
        """Yield the stratified folds, at most one per sample of the largest class."""
        return self._folds(y).split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of folds ``split`` makes on ``y``."""
        return self.n_splits if y is None else self._folds(y).n_splits


class _LogisticRegressionCV(LogisticRegressionCV):
    """LogisticRegressionCV whose ``score`` is accuracy, as every classifier's.

    scikit-learn's ``LogisticRegressionCV.score`` uses its ``scoring``: the
    probe chooses ``C`` by log-loss, but ``score`` (hence
    ``cross_val_score``, ``compare_transfer`` and a pipeline's ``score``)
    must stay accuracy, like the transfer estimators it is compared with.
    """

    def score(self, X, y, sample_weight=None):
        """Return the mean accuracy on ``X`` and ``y``."""
        return ClassifierMixin.score(self, X, y, sample_weight=sample_weight)


def _neg_log_loss(estimator, X, y, sample_weight=None):
    """scikit-learn's ``neg_log_loss`` over all the classes the model was fitted on.

    With a few labels per class a test fold may lack a class; scikit-learn's
    ``"neg_log_loss"`` scorer then fails (and the search scores the candidate
    NaN), since it infers the classes from the fold. Here they are the
    fitted model's ``classes_``.
    """
    proba = estimator.predict_proba(X)
    return -log_loss(y, proba, labels=estimator.classes_, sample_weight=sample_weight)


def _check_transfer(estimator, caller):
    """Raise unless ``estimator`` is a pretrained transfer estimator."""
    if not isinstance(estimator, _BaseTransfer):
        hint = (
            " For a pipeline, pass its pretrained last step and put the pipeline's "
            "transformers before the search (a Pipeline whose last step is the "
            "search), or use compare_transfer, which takes pipelines."
            if isinstance(estimator, Pipeline)
            else ""
        )
        msg = (
            f"{caller} takes a TransferClassifier or TransferRegressor, got "
            f"{type(estimator).__name__}.{hint}"
        )
        raise TypeError(msg)
    if estimator._source_record() is None:
        msg = (
            f"{caller} needs pretrained weights, but this "
            f"{type(estimator).__name__} has none: call fit_source(X, y) on the "
            "source task first (or pass a module instance with trained weights "
            "as net)."
        )
        raise ValueError(msg)


def linear_probe(estimator: Any) -> Pipeline:
    """Return the linear probe of a pretrained transfer estimator.

    The probe is the standard strong baseline with few labels (Kornblith et
    al., CVPR 2019; CLIP, Radford et al., ICML 2021): the pretrained network
    up to its head (:class:`PretrainedFeatures`), standardised
    (:class:`~sklearn.preprocessing.StandardScaler`), then a linear model
    whose L2 strength is chosen by cross-validation on the training labels:

    - classifier: :class:`~sklearn.linear_model.LogisticRegressionCV`, with
      the estimator's ``class_weight``, over
      ``C`` in 1e-4 ... 1e4 (17 values, two per decade), 3-fold stratified
      (2-fold when no class has 3 samples),
      scored by ``neg_log_loss`` (a proper scoring rule, less noisy than
      accuracy on a few samples), refit on all training labels; its
      ``score`` is accuracy, as for any classifier;
    - regressor: :class:`~sklearn.linear_model.RidgeCV` over ``alpha`` in
      1e-3 ... 1e4 (15 values), by efficient leave-one-out.

    Read more in the :ref:`User Guide <few_labels>`.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        A pretrained transfer estimator (after ``fit_source`` or
        ``load_source``, or with a module instance holding trained weights).
        It is cloned, never changed.

    Returns
    -------
    probe : Pipeline
        An unfitted pipeline ``pretrainedfeatures`` → ``standardscaler`` →
        ``logisticregressioncv`` (or ``ridgecv``), with ``fit``, ``predict``,
        ``score`` (and ``predict_proba`` for a classifier). Its
        ``fit(X, y, sample_weight=w)`` weighs both the standardisation (the
        weighted mean and variance) and the linear model, including the
        class frequencies of ``class_weight="balanced"`` and the inner
        cross-validation's log-loss, so that a row of weight 0 changes
        nothing.

    Raises
    ------
    TypeError
        If ``estimator`` is not a transfer estimator.
    ValueError
        If it has no pretrained weights.

    See Also
    --------
    make_transfer_search : A search with the probe among its candidates.
    PretrainedFeatures : The pretrained network as a transformer.

    Notes
    -----
    The inner split is 3-fold, or 2-fold when no class has 3 labelled
    samples; it needs 2 samples of some class. A class with fewer samples
    than folds gets scikit-learn's warning about the least populated class.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktransfer import TransferClassifier, linear_probe
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = TransferClassifier(max_epochs=5, random_state=0)
    >>> clf = clf.fit_source(X[y < 5], y[y < 5])
    >>> probe = linear_probe(clf).fit(X[y >= 5][:50], y[y >= 5][:50])
    >>> probe.predict(X[y >= 5][50:53]).shape
    (3,)
    """
    _check_transfer(estimator, "linear_probe")
    transfer = clone(estimator).set_params(pretrained=True)
    if is_classifier(estimator):
        name, model = (
            "logisticregressioncv",
            _LogisticRegressionCV(
                Cs=_CS,
                cv=_AtMostKFold(_PROBE_CV),
                scoring="neg_log_loss",
                max_iter=1000,
                # Weighted as the estimator's own fine-tuning is.
                class_weight=estimator.class_weight,
                **L2_LOGISTIC_CV,
            ),
        )
    else:
        name, model = "ridgecv", RidgeCV(alphas=_ALPHAS)
    return WeightedPipeline(
        [
            ("pretrainedfeatures", PretrainedFeatures(transfer)),
            ("standardscaler", StandardScaler()),
            (name, model),
        ]
    )


def _frozen_specs(estimator, frozen):
    """Return the list of ``frozen`` settings searched with pretrained weights."""
    if frozen is None:
        specs = [()]
        if estimator.frozen not in ((), None, ""):
            specs.append(estimator.frozen)
        return specs
    if isinstance(frozen, str) or not isinstance(frozen, Sequence) or not frozen:
        msg = (
            "frozen must be a non-empty list of frozen settings, each a glob "
            "pattern or a tuple of them, e.g. [(), 'features.*'], got "
            f"{frozen!r}."
        )
        raise ValueError(msg)
    names = list(estimator._source_record().state_dict)
    # frozen also names submodules: the dotted prefixes of the tensors' names,
    # and, for a module instance, its submodules without any tensor.
    layers = {
        key.rsplit(".", i)[0] for key in names for i in range(1, key.count(".") + 1)
    }
    module = getattr(estimator.net, "module", estimator.net)  # a skorch template's
    if isinstance(module, nn.Module):
        layers |= {name for name, _ in module.named_modules() if name}
    for spec in frozen:
        for pattern in _layers.check_patterns(spec, "frozen"):
            if not any(fnmatchcase(name, pattern) for name in (*names, *layers)):
                msg = (
                    f"frozen setting {spec!r}: pattern {pattern!r} matches no "
                    f"tensor of the pretrained network, whose names are "
                    f"{', '.join(map(repr, names[:12]))}"
                    f"{', ...' if len(names) > 12 else ''}."
                )
                raise ValueError(msg)
    return list(frozen)


def make_transfer_search(
    estimator: Any,
    *,
    frozen: Sequence[Any] | None = None,
    scratch: bool = True,
    probe: bool = True,
    scoring: str | Any | None = None,
    cv: int | Any = 5,
    n_jobs: int | None = None,
    random_state: int | None = None,
    verbose: int = 0,
    error_score: str | float = "raise",
) -> GridSearchCV:
    """Return a grid search that picks scratch, transfer or the linear probe.

    With few labels, which model is best depends on the task: fine-tuning
    from the pretrained weights, a new head on frozen features, training from
    scratch, or a linear model on the pretrained features. This builds the
    standard scikit-learn search over all of them: a
    :class:`~sklearn.pipeline.Pipeline` ``features`` → ``scaler`` →
    ``model`` whose steps are swapped by a list of parameter grids, under
    :class:`~sklearn.model_selection.GridSearchCV`. The candidates are

    - the estimator fine-tuned from its pretrained weights
      (``pretrained=True``) with each setting of ``frozen``, and otherwise its
      own parameters;
    - ``scratch``: the same network from fresh weights, nothing frozen, no
      fine-tuning method (``compare_transfer``'s ``"scratch"``);
    - ``probe``: :func:`linear_probe`, whose L2 strength is chosen by an
      inner cross-validation;
    - for a classifier of texts (a Hugging Face ``net``), the classical
      baseline without transfer: TF-IDF of words and word pairs
      (:class:`~sklearn.feature_extraction.text.TfidfVectorizer`,
      ``sublinear_tf=True``) and the probe's logistic regression, its ``C``
      chosen by the same inner cross-validation. On topic-like tasks, where
      keywords decide, it can win.

    Every candidate and fold fine-tunes from the same pretrained weights, and
    frozen stages are shared across them through the frozen-output store.
    ``search.fit(X, y, sample_weight=w)`` weighs every candidate's training,
    the probe's standardisation included (each fold gets its rows'
    weights); as for any ``GridSearchCV``, the test scores of the folds are
    weighted only with scikit-learn's metadata routing enabled and the
    scorer's ``set_score_request(sample_weight=True)``.

    Read more in the :ref:`User Guide <few_labels>`.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        A pretrained transfer estimator. It is cloned, never changed.
    frozen : list of str or tuple, default=None
        The ``frozen`` settings tried with pretrained weights, e.g.
        ``[(), "features.*"]``. ``None`` is ``[()]`` plus the estimator's own
        ``frozen`` when it freezes something.
    scratch : bool, default=True
        Whether training from scratch is a candidate.
    probe : bool, default=True
        Whether the linear probe is a candidate.
    scoring : str, callable or None, default=None
        How candidates are compared, as in ``GridSearchCV``. ``None`` is a
        proper scoring rule: the negated log-loss for a classifier whose
        criterion defines probabilities (scikit-learn's ``"neg_log_loss"``,
        over every class the model was fitted on, so that a test fold without
        some class still scores; else ``"accuracy"``),
        ``"neg_mean_squared_error"`` for a regressor. With a few test samples
        per fold, accuracy moves in steps of one sample and ties often; the
        log-loss is continuous and ranks confident errors lower. For a
        classifier of texts, ``None`` is ``"accuracy"`` (ties go to the first
        candidate: fine-tuning): there the candidates' probabilities differ
        in kind (TF-IDF's logistic regression hedges, a fine-tuned language
        model is confident), and on folds of a few texts the log-loss picks
        the hedging model over more accurate ones. Measured on two text tasks
        with all-MiniLM-L6-v2 (``benchmarks/text.py``, 5 seeds, 3 and 5
        folds, K = 4, 16 and 64 texts per class), accuracy's pick was better
        by 2.2 points on average over the 12 settings and worse by at most
        0.8 (e.g. 66.9% against 54.6% at 4 tweets per class, 3 folds), while
        on the array tasks of ``benchmarks/transfer_quality.py`` the
        log-loss's pick was better on average (by 0.4 points over 9
        settings, by 2.1 on one).
    cv : int or cross-validation generator, default=5
        An int is the number of folds of a shuffled
        :class:`~sklearn.model_selection.StratifiedKFold` (classifier) or
        :class:`~sklearn.model_selection.KFold` (regressor), seeded by
        ``random_state``; for a classifier it is at most the sample count of
        the largest class (at least 2), so ``cv=5`` makes 2 folds with 2
        labels per class. A training fold then holds one label per class,
        too few for the linear probe (and, for texts, the TF-IDF candidate)
        to choose its L2 strength: the search raises a ``ValueError``.
        There, pass ``error_score=np.nan`` (those candidates score NaN and
        rank last, with a ``FitFailedWarning``) or, but for texts,
        ``probe=False``. Pass e.g.
        ``RepeatedStratifiedKFold(n_splits=5, n_repeats=3)`` to average over
        more splits, at proportionally more fits.
    n_jobs : int, default=None
        As in ``GridSearchCV``.
    random_state : int or None, default=None
        Seeds the folds of an int ``cv``.
    verbose : int, default=0
        As in ``GridSearchCV``.
    error_score : "raise" or float, default="raise"
        What a candidate that fails to fit on a fold scores, as in
        ``GridSearchCV``. ``"raise"`` (unlike ``GridSearchCV``'s default
        ``np.nan``) stops the search with the candidate's error: a failed
        candidate scored NaN would silently leave the choice to the others.
        A number scores it so, with scikit-learn's ``FitFailedWarning``.

    Returns
    -------
    search : GridSearchCV
        Unfitted. After ``fit(X, y)``, ``best_estimator_`` is the refitted
        pipeline (``best_estimator_[-1]`` the chosen model),
        ``best_params_`` names it, and ``cv_results_`` holds every score.
        As for any ``GridSearchCV``, ``search.score(X, y)`` is ``scoring``
        (the log-loss by default, accuracy on texts);
        ``search.best_estimator_.score(X, y)`` is the chosen model's accuracy
        or R².

    Raises
    ------
    TypeError
        If ``estimator`` is not a transfer estimator.
    ValueError
        If it has no pretrained weights, or ``frozen`` is not a non-empty
        list.

    See Also
    --------
    compare_transfer : Scores every option on the same splits, with a test
        of negative transfer, instead of choosing one.
    linear_probe : The probe candidate alone.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktransfer import TransferClassifier, make_transfer_search
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = TransferClassifier(max_epochs=5, random_state=0)
    >>> clf = clf.fit_source(X[y < 5], y[y < 5])
    >>> search = make_transfer_search(
    ...     clf, frozen=[(), "features.*"], cv=3, random_state=0
    ... )
    >>> search = search.fit(X[y >= 5][:60], y[y >= 5][:60])
    >>> len(search.cv_results_["params"])
    4
    """
    _check_transfer(estimator, "make_transfer_search")
    specs = _frozen_specs(estimator, frozen)
    classifier = is_classifier(estimator)
    transfer = clone(estimator).set_params(pretrained=True)
    grid = [{"model__frozen": specs}]
    if scratch:
        grid.append({"model": [clone(estimator).set_params(**_SCRATCH_PARAMS)]})
    if probe:
        steps = dict(linear_probe(estimator).steps)
        grid.append(
            {
                "features": [steps["pretrainedfeatures"]],
                "scaler": [steps["standardscaler"]],
                "model": [steps.get("logisticregressioncv", steps.get("ridgecv"))],
            }
        )
    texts = classifier and _hf.as_spec(estimator.net) is not None
    if texts:  # _text.py
        logistic = dict(linear_probe(estimator).steps)["logisticregressioncv"]
        grid.append(_text.tfidf_candidate(logistic))
    if scoring is None:
        if not classifier:
            scoring = "neg_mean_squared_error"
        elif texts:  # measured: see the docstring
            scoring = "accuracy"
        else:
            scoring = _neg_log_loss if hasattr(transfer, "predict_proba") else None
    if isinstance(cv, numbers.Integral):
        splitter = _AtMostKFold if classifier else KFold
        cv = splitter(n_splits=int(cv), shuffle=True, random_state=random_state)
    pipeline = WeightedPipeline(
        [("features", "passthrough"), ("scaler", "passthrough"), ("model", transfer)]
    )
    return GridSearchCV(
        pipeline,
        grid,
        scoring=scoring,
        cv=cv,
        n_jobs=n_jobs,
        verbose=verbose,
        error_score=error_score,
    )
