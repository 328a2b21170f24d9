"""Scoring without target labels: scorers for ``scoring=`` in scikit-learn's searches.

When the target rows carry no labels, ``adapt_weight`` (or the method, or
whether to adapt at all) cannot be chosen by target accuracy. These scorers
follow scikit-learn's scorer protocol, ``scorer(estimator, X, y)`` with
greater is better, and read the rows as ``fit`` does with ``adapt``: the
unlabelled rows (``y == -1`` for a classifier, NaN for a regressor) are the
target, the labelled rows the source.

- :func:`prediction_entropy_scorer`: minus the mean entropy of the predicted
  class probabilities on the target rows (confident predictions score high;
  Grandvalet & Bengio 2005 use it as a training criterion, Morerio et al.
  2018 for choosing settings).
- :func:`importance_weighted_scorer`: the accuracy (R² for regressors: minus
  the squared error) of the labelled rows, each weighed by its importance
  ``p_target(x) / p_source(x)``: importance-weighted validation (Sugiyama,
  Krauledat & Müller, JMLR 2007), with the density ratio from a logistic
  regression told apart the two kinds of rows (Bickel et al. 2007).
- :func:`deep_embedded_validation_scorer`: deep embedded validation (You et
  al., ICML 2019): the importance-weighted loss with the density ratio
  estimated on the network's features (``transform``, the head's input) and
  a control variate that lowers its variance.

:func:`adaptation_refit` is a ``refit`` callable for scikit-learn's searches
that reads those scores: it keeps "no adaptation" unless every scorer says,
fold by fold, that an adapted candidate beats it by more than the scores'
fold-to-fold spread.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._common import take_rows
from .._skorch._adapt import unlabelled_rows

__all__ = [
    "adaptation_refit",
    "deep_embedded_validation_scorer",
    "importance_weighted_scorer",
    "prediction_entropy_scorer",
]


def _marked(estimator, y):
    """Return which rows are unlabelled, by the estimator's kind of target."""
    return unlabelled_rows(y, regression=not is_classifier(estimator))


def _flat(X):
    """Return ``X`` as a dense float64 array of one row per sample."""
    if sparse.issparse(X):
        X = X.toarray()
    X = np.asarray(X, dtype=np.float64)
    return X.reshape(len(X), -1)


def prediction_entropy_scorer(estimator, X, y=None, sample_weight=None):
    """Return minus the mean entropy of the predicted probabilities on target rows.

    Read more in the :ref:`User Guide <adaptation>`.

    A scorer (``scoring=prediction_entropy_scorer``): greater is better. The
    entropy of row ``i`` is ``-sum_k p_ik log p_ik`` in nats, with
    ``0 log 0 = 0``; the score is minus its mean (weighted by
    ``sample_weight`` if given) over the rows marked unlabelled by ``y ==
    -1``, or over every row when ``y`` is None. It needs no label, and
    favours confident predictions: it picks well among adaptation weights of
    one method, but also favours longer training and self-training, which
    make predictions confident whether right or not (see
    :ref:`adaptation`).

    Parameters
    ----------
    estimator : fitted classifier
        Needs ``predict_proba``.
    X : array-like of shape (n_samples, ...)
        Samples.
    y : array-like of shape (n_samples,) or None, default=None
        Labels with ``-1`` for the unlabelled (target) rows, which are the
        ones scored; None scores every row.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the rows in the mean.

    Returns
    -------
    score : float
        At most 0; ``-log(n_classes)`` for uniform predictions.

    Raises
    ------
    TypeError
        If the estimator has no ``predict_proba``.
    ValueError
        If ``y`` is given and marks no row unlabelled.
    """
    if not hasattr(estimator, "predict_proba"):
        msg = (
            "prediction_entropy_scorer needs class probabilities; "
            f"{type(estimator).__name__} has no predict_proba."
        )
        raise TypeError(msg)
    if y is not None:
        rows = np.flatnonzero(_marked(estimator, y))
        if len(rows) == 0:
            msg = (
                "prediction_entropy_scorer scores the unlabelled rows (y == -1), "
                "and y marks none. Pass the target rows with y == -1, or y=None "
                "to score every row."
            )
            raise ValueError(msg)
        X = take_rows(X, rows)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)[rows]
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    logs = np.log(np.where(proba > 0, proba, 1.0))
    entropy = -(proba * logs).sum(axis=1)
    return -float(np.average(entropy, weights=sample_weight))


def _importance(source, target):
    """Return ``p_target(x) / p_source(x)`` at the source rows.

    A logistic regression (on standardised features, ``C=1``) tells the
    source rows (0) from the target rows (1); the ratio is
    ``(n_source / n_target) * P(1 | x) / P(0 | x)`` (Bickel et al. 2007).
    """
    features = np.vstack([source, target])
    domain = np.r_[np.zeros(len(source)), np.ones(len(target))]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    classifier.fit(features, domain)
    p_target = classifier.predict_proba(source)[:, 1]
    p_target = np.clip(p_target, 1e-6, 1 - 1e-6)
    return len(source) / len(target) * p_target / (1 - p_target)


def _split_domains(estimator, X, y, who):
    """Return the labelled and unlabelled rows' indices; both must exist."""
    if y is None:
        msg = f"{who} needs y, with the unlabelled (target) rows marked."
        raise ValueError(msg)
    unlabelled = _marked(estimator, y)
    if unlabelled.all() or not unlabelled.any():
        marker = "-1" if is_classifier(estimator) else "NaN"
        msg = (
            f"{who} weighs labelled (source) rows by their likeness to the "
            f"unlabelled (target) rows, y == {marker}; y has "
            f"{int(unlabelled.sum())} unlabelled rows of {len(unlabelled)}. "
            "Both kinds are needed."
        )
        raise ValueError(msg)
    return np.flatnonzero(~unlabelled), np.flatnonzero(unlabelled)


def importance_weighted_scorer(estimator, X, y, sample_weight=None):
    """Return the importance-weighted score of the labelled rows (IWV).

    Read more in the :ref:`User Guide <adaptation>`.

    Importance-weighted validation (Sugiyama, Krauledat & Müller, "Covariate
    shift adaptation by importance weighted cross validation", JMLR 2007):
    each labelled (source) row's score is weighed by its importance
    ``w(x) = p_target(x) / p_source(x)``, estimated from the inputs by a
    logistic regression that tells the labelled rows from the unlabelled
    ones (``y == -1`` or NaN). The score is the self-normalised mean
    ``sum(w * s) / sum(w)`` of the per-row score ``s``: 1 for a correct
    class and 0 otherwise (weighted accuracy), or minus the squared error
    (mean over outputs) for a regressor. Greater is better.

    Parameters
    ----------
    estimator : fitted classifier or regressor
        The estimator to score, e.g. a candidate of a search.
    X : array-like of shape (n_samples, ...)
        Labelled and unlabelled rows; flattened for the domain classifier.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Labels with the unlabelled rows marked.
    sample_weight : array-like of shape (n_samples,), default=None
        Multiplies the importances.

    Returns
    -------
    score : float
        The importance-weighted mean score of the labelled rows; greater is
        better.

    Raises
    ------
    ValueError
        If ``y`` is None, or lacks labelled or unlabelled rows, or ``X`` is
        not numeric (texts, token dicts).
    """
    source, target = _split_domains(estimator, X, y, "importance_weighted_scorer")
    X_source = take_rows(X, source)
    try:
        inputs = _flat(X_source), _flat(take_rows(X, target))
    except (TypeError, ValueError) as error:
        msg = (
            "importance_weighted_scorer weighs rows by a logistic regression on "
            "their inputs, which must be numeric; got "
            f"{type(X).__name__} ({error}). For texts or token dicts use "
            "deep_embedded_validation_scorer (the same weighting on the "
            "network's features)."
        )
        raise ValueError(msg) from error
    weights = _importance(*inputs)
    if sample_weight is not None:
        weights = weights * np.asarray(sample_weight)[source]
    y_source = np.asarray(y)[source]
    predicted = np.asarray(estimator.predict(X_source))
    if is_classifier(estimator):
        per_row = (predicted == y_source).astype(np.float64)
    else:
        error = predicted.reshape(len(source), -1) - y_source.reshape(len(source), -1)
        per_row = -(error**2).mean(axis=1)
    return float(np.sum(weights * per_row) / np.sum(weights))


def deep_embedded_validation_scorer(estimator, X, y, sample_weight=None):
    """Return minus the deep embedded validation risk (DEV, You et al. 2019).

    Read more in the :ref:`User Guide <adaptation>`.

    You, Wang, Long and Wang, "Towards Accurate Model Selection in Deep
    Unsupervised Domain Adaptation", ICML 2019: the importances ``w`` of the
    labelled rows are estimated on the network's features
    (``estimator.transform(X)``, the head's input) by a logistic regression
    that tells labelled from unlabelled rows; with ``l`` the per-row loss
    (log-loss of the true class for a classifier, squared error for a
    regressor) and ``L = w * l``, the risk is
    ``mean(L) + eta * mean(w) - eta`` with the control variate
    ``eta = -Cov(L, w) / Var(w)``. The score is minus the risk: greater is
    better.

    Parameters
    ----------
    estimator : fitted TransferClassifier or TransferRegressor
        Needs ``transform`` (and ``predict_proba`` for a classifier).
    X : array-like of shape (n_samples, ...)
        Labelled and unlabelled rows.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Labels with the unlabelled rows marked (``-1`` or NaN).
    sample_weight : None
        Not supported (DEV's control variate assumes equal weights).

    Returns
    -------
    score : float
        Minus the deep embedded validation risk; greater is better.

    Raises
    ------
    ValueError
        If ``y`` is None or lacks labelled or unlabelled rows, or for a
        ``sample_weight``.
    """
    if sample_weight is not None:
        msg = "deep_embedded_validation_scorer does not take sample_weight."
        raise ValueError(msg)
    source, target = _split_domains(estimator, X, y, "deep_embedded_validation_scorer")
    features = _flat(estimator.transform(X))
    weights = _importance(features[source], features[target])
    X_source = take_rows(X, source)
    y_source = np.asarray(y)[source]
    if is_classifier(estimator):
        proba = np.asarray(estimator.predict_proba(X_source), dtype=np.float64)
        index = np.searchsorted(estimator.classes_, y_source)
        loss = -np.log(np.clip(proba[np.arange(len(source)), index], 1e-15, 1.0))
    else:
        predicted = np.asarray(estimator.predict(X_source), dtype=np.float64)
        error = predicted.reshape(len(source), -1) - y_source.reshape(len(source), -1)
        loss = (error**2).mean(axis=1)
    weighted = weights * loss
    variance = np.var(weights, ddof=1) if len(weights) > 1 else 0.0
    if variance > 0:
        eta = -np.cov(weighted, weights)[0, 1] / variance
    else:
        eta = 0.0
    risk = weighted.mean() + eta * weights.mean() - eta
    return -float(risk)


def _no_adaptation(params):
    """Whether a candidate's parameters say "no adaptation".

    ``adapt=None``, or ``adapt_weight=0`` with a method that weighs a term
    (AdaBN has none: it adapts the statistics at any weight).
    """
    if "adapt" in params and params["adapt"] is None:
        return True
    return (
        "adapt_weight" in params
        and params["adapt_weight"] == 0
        and params.get("adapt") != "adabn"
    )


def _split_scores(cv_results, metric, n_candidates):
    """Return the per-split scores of ``metric``, shape (n_candidates, n_splits)."""
    prefix, suffix = "split", f"_test_{metric}"
    splits = sorted(
        int(key[len(prefix) : -len(suffix)])
        for key in cv_results
        if key.startswith(prefix)
        and key.endswith(suffix)
        and key[len(prefix) : -len(suffix)].isdigit()
    )
    scores = np.array(
        [np.asarray(cv_results[f"split{k}{suffix}"], dtype=float) for k in splits]
    )
    return scores.T.reshape(n_candidates, len(splits))


def adaptation_refit(cv_results, *, metrics=None, baseline=None):
    """Return the candidate to refit: "no adaptation" unless the scorers agree.

    Read more in the :ref:`User Guide <adaptation>`.

    A ``refit`` callable for :class:`~sklearn.model_selection.GridSearchCV`
    and :class:`~sklearn.model_selection.RandomizedSearchCV`, for a search
    scored without target labels (``scoring=`` a dict of unsupervised
    scorers, e.g. :func:`importance_weighted_scorer` and
    :func:`deep_embedded_validation_scorer`). It returns the index of the
    best "no adaptation" candidate (``adapt=None``, or ``adapt_weight=0`` with a
    method other than ``"adabn"``, in
    its parameters) unless some adapted candidate beats it on *every* metric
    by more than the spread over the splits: for each metric, the per-split
    differences ``d_k = score_k(candidate) - score_k(no adaptation)`` (the
    same rows score both) must have a mean above their standard deviation
    (``ddof=1``). Among the candidates that pass, the one with the highest
    mean score on the first metric is returned.

    The rule follows the literature's warnings: unsupervised validation
    scores are noisy and often disagree with target accuracy (Musgrave et
    al., "Benchmarking validation methods for unsupervised domain
    adaptation", 2022; Saito et al., "Tune it the right way", ICCV 2021), and
    adaptation can lose to the source-only model; importance-weighted
    estimates of the target risk (Sugiyama et al. 2007; You et al. 2019) are
    unbiased but of high variance. So the source-only model is the default,
    and a change needs two estimates of the target risk to agree, each by
    more than its own noise. Prediction entropy should not be one of the
    metrics: it rewards confident predictions, right or wrong, and picks
    collapsed self-training.

    Parameters
    ----------
    cv_results : dict of numpy arrays
        A search's ``cv_results_``: ``params`` and ``split<k>_test_<metric>``
        for at least 2 splits.
    metrics : sequence of str, default=None
        The scorer names to agree (the keys of the ``scoring`` dict); None
        uses every metric of the search (``"score"`` for a single scorer).
    baseline : callable, default=None
        ``baseline(params) -> bool``, true for the "no adaptation"
        candidates; None: ``adapt`` is None or ``adapt_weight`` is 0.

    Returns
    -------
    index : int
        The index of the chosen candidate in ``cv_results["params"]``.

    Raises
    ------
    ValueError
        When no candidate is "no adaptation", a metric is unknown, or there
        are fewer than 2 splits.

    Examples
    --------
    >>> from functools import partial
    >>> import numpy as np
    >>> results = {
    ...     "params": [{"adapt_weight": 0.0}, {"adapt_weight": 1.0}],
    ...     "split0_test_iwv": np.array([0.60, 0.70]),
    ...     "split1_test_iwv": np.array([0.62, 0.71]),
    ...     "split0_test_dev": np.array([-1.0, -0.8]),
    ...     "split1_test_dev": np.array([-1.0, -1.1]),
    ... }
    >>> adaptation_refit(results)  # DEV disagrees on split 1
    0
    >>> adaptation_refit(results, metrics=["iwv"])
    1
    """
    params = list(cv_results["params"])
    n = len(params)
    is_baseline = _no_adaptation if baseline is None else baseline
    base = [i for i, p in enumerate(params) if is_baseline(p)]
    if not base:
        msg = (
            "adaptation_refit keeps 'no adaptation' unless the scorers agree, but "
            "no candidate is 'no adaptation': add adapt_weight=0 (or adapt=None) "
            f"to the grid, or pass baseline=. Candidates: {params}."
        )
        raise ValueError(msg)
    found = [
        key[len("mean_test_") :] for key in cv_results if key.startswith("mean_test_")
    ]
    if not found:  # a dict made by hand, without the means
        found = sorted(
            {key.split("_test_", 1)[1] for key in cv_results if "_test_" in key}
        )
    metrics = found if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in found]
    if unknown or not metrics:
        msg = f"adaptation_refit: metrics {unknown or metrics} not among {found}."
        raise ValueError(msg)
    scores = {m: _split_scores(cv_results, m, n) for m in metrics}
    n_splits = scores[metrics[0]].shape[1]
    if n_splits < 2:
        msg = (
            f"adaptation_refit compares candidates by their spread over splits; "
            f"cv_results has {n_splits} split(s). Use cv >= 2."
        )
        raise ValueError(msg)
    first = np.nanmean(scores[metrics[0]], axis=1)
    b = max(base, key=lambda i: (np.nan_to_num(first[i], nan=-np.inf), -i))
    passed = []
    for i in range(n):
        if i in base:
            continue
        ok = True
        for m in metrics:
            d = scores[m][i] - scores[m][b]
            if not np.all(np.isfinite(d)) or not d.mean() > d.std(ddof=1):
                ok = False
                break
        if ok:
            passed.append(i)
    if not passed:
        return int(b)
    return int(max(passed, key=lambda i: (first[i], -i)))
