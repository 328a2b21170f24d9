"""Does pretraining help? ``compare_transfer`` scores scratch against transfer.

:func:`compare_transfer` cross-validates training from scratch, fine-tuning
from the pretrained weights, and any other fine-tuning settings on the same
splits, and tests whether every transferred setting is worse than scratch
(negative transfer); its result is a
:class:`~sktransfer._selection._comparison.TransferComparison`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import check_cv, cross_val_score

from .._common import derive_seed, warn_at_user
from .._compat import _check_sample_weight
from .._estimators._pipeline import transfer_step
from ._candidates import (
    PROBE,
    SCRATCH,
    TRANSFER,
    check_settings,
    check_steps,
    from_scratch,
    probe_pipeline,
    seeded,
    weighted,
    with_params,
)
from ._comparison import (
    ALPHA,
    NegativeTransferWarning,
    TransferComparison,
    format_number,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["compare_transfer"]


def _progress_line(name, scores, scoring_name, start):
    """Return the line ``compare_transfer(verbose=1)`` prints after a setting."""
    scale = np.abs(scores).max()
    return (
        f"[sktransfer] compare_transfer: {name!r} done: {scoring_name} "
        f"{format_number(scores.mean(), scale)} ± "
        f"{format_number(scores.std(), scale)} over {len(scores)} folds "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _scoring_name(scoring, estimator):
    """Name ``scoring`` for the table and the plot."""
    if isinstance(scoring, str):
        return scoring
    if scoring is None:
        if is_classifier(estimator):
            return "accuracy"
        return "r2" if is_regressor(estimator) else "score"
    if callable(scoring):
        return getattr(scoring, "__name__", "score")
    msg = (
        "compare_transfer compares one score: scoring must be None, a str or a "
        f"callable scorer; got {type(scoring).__name__}: {scoring!r}."
    )
    raise TypeError(msg)


def compare_transfer(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike,
    *,
    cv: Any = 5,
    scoring: str | Any | None = None,
    n_jobs: int | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    linear_probe: bool = True,
    random_state: int | np.random.RandomState | None = None,
    verbose: int = 0,
    sample_weight: ArrayLike | None = None,
) -> TransferComparison:
    """Cross-validate fine-tuning against training from scratch, on the same splits.

    Does pretraining help the target task? On the same cross-validation
    splits of the target data ``X, y``, this scores:

    - ``"scratch"``: the same network trained from freshly initialised
      weights (nothing frozen, no L2-SP, no learning-rate scale, no
      unfreezing, no layer decay);
    - ``"transfer"``: the estimator fine-tuned from its pretrained weights
      with its own parameters;
    - ``"linear probe"`` (unless ``linear_probe=False``): a linear model on
      the pretrained network's features, the standard strong baseline with
      few labels: :class:`PretrainedFeatures`, standardised, then
      :class:`~sklearn.linear_model.LogisticRegressionCV` (classifiers) or
      :class:`~sklearn.linear_model.RidgeCV` (regressors), whose L2
      strength is chosen by cross-validation on each training fold
      (:func:`linear_probe`);
    - each named setting of ``settings``: the estimator fine-tuned from its
      pretrained weights with the setting's parameters.

    The estimator must be pretrained; pretraining is not repeated, every
    fold and setting fine-tunes from the same pretrained weights. When every
    transferred setting scores significantly lower than scratch (see Notes),
    a :class:`NegativeTransferWarning` is issued.

    Read more in the :ref:`User Guide <fine_tuning>`.

    Parameters
    ----------
    estimator : TransferClassifier, TransferRegressor or Pipeline
        A pretrained transfer estimator (after ``fit_source``, or with a
        module instance holding trained weights as ``net``), or a pipeline
        ending in one. It is cloned, never changed.
    X : array-like of shape (n_samples, n_features) or (n_samples, ...)
        Target samples.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Target labels or targets.
    cv : int, cross-validation generator or iterable, default=5
        The splits, as in :func:`~sklearn.model_selection.cross_val_score`:
        an int is the number of folds of a
        :class:`~sklearn.model_selection.StratifiedKFold` (classifiers) or
        :class:`~sklearn.model_selection.KFold` (otherwise), shuffled with
        ``random_state`` when that is given. The splits are made once and
        used for every setting.
    scoring : str, callable or None, default=None
        One score, as in :func:`~sklearn.model_selection.cross_val_score`
        (higher is better); ``None`` is the estimator's ``score`` (accuracy
        or R²).
    n_jobs : int, default=None
        Number of folds trained in parallel, for each setting in turn.
        ``None`` means 1 unless in a :obj:`joblib.parallel_backend` context;
        ``-1`` means all processors.
    settings : dict of str to dict, default=None
        Further fine-tuning settings to compare, each a name and the
        parameters it sets on a clone of ``estimator`` with ``set_params``,
        e.g. ``{"frozen backbone": {"frozen": "features.*"}, "L2-SP":
        {"frozen": (), "l2sp": 0.01}}``. For a pipeline, name the step:
        ``{"transferclassifier__frozen": ...}``. The names ``"scratch"``,
        ``"transfer"`` and ``"linear probe"`` are taken.
    linear_probe : bool, default=True
        Whether to score the linear probe.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling of the folds when ``cv`` is an int, and is set as
        the ``random_state`` of every estimator compared (a setting may set
        its own), so that all start from the same seed. A RandomState
        instance is drawn from once for an int seed. ``None`` keeps ``cv``
        unshuffled and the estimators' own ``random_state``.
    verbose : int, default=0
        ``0`` is silent. ``1`` prints a line when each setting starts and one
        with its mean score and time when it finishes, and
        :func:`~sklearn.model_selection.cross_val_score` prints each fold's
        score as it finishes (its ``verbose=3``). The estimators' own
        ``verbose`` is left as it is.
    sample_weight : array-like of shape (n_samples,), default=None
        Weight of each sample in every setting's training (each training fold
        gets its rows' weights): the fine-tuning loss, the linear probe's
        standardisation and model, and every step of a pipeline whose ``fit``
        takes ``sample_weight``. The folds' test scores are unweighted, as in
        :func:`~sklearn.model_selection.cross_val_score`, unless
        scikit-learn's metadata routing is enabled and the scorer requests
        the weights.

    Returns
    -------
    comparison : TransferComparison
        The per-fold scores of every setting, the ``gain`` of the best
        transferred setting over scratch, whether transfer is
        ``negative_transfer``; printing it shows a table, ``plot()`` draws
        the scores, and ``to_frame()`` returns them as a DataFrame.

    Raises
    ------
    ValueError
        If the estimator has no pretrained weights, or a setting has a
        reserved or duplicate name or invalid parameters.
    TypeError
        If the estimator is not a transfer estimator, or ``settings`` is not
        a dict of dicts.

    Warns
    -----
    NegativeTransferWarning
        When every transferred setting scores significantly lower than
        scratch.

    See Also
    --------
    TransferComparison : The result, with the test used.
    sklearn.model_selection.cross_val_score : Scores one estimator.

    Notes
    -----
    A transferred setting scores lower than scratch when a one-sided paired
    t-test on the per-fold differences of their scores (setting minus
    scratch, :func:`scipy.stats.ttest_rel` with ``alternative="less"``)
    gives a p-value below 0.05; when the differences are all equal, when it
    scores lower fold by fold by the same amount. Negative transfer means
    that every transferred setting scores lower. Use five or more folds: with
    fewer, the test rarely reaches significance.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skorch import NeuralNetClassifier
    >>> from torch import nn
    >>> from sktransfer import MLP, TransferClassifier, compare_transfer
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> net = NeuralNetClassifier(
    ...     MLP, criterion=nn.CrossEntropyLoss, lr=0.3, max_epochs=5, train_split=None
    ... )
    >>> clf = TransferClassifier(net, random_state=0)
    >>> clf = clf.fit_source(X[y < 5], y[y < 5])
    >>> settings = {"frozen": {"frozen": "features.*"}}
    >>> comparison = compare_transfer(
    ...     clf, X[y >= 5][:100], y[y >= 5][:100], cv=3, settings=settings,
    ...     random_state=0,
    ... )
    >>> list(comparison.scores)
    ['scratch', 'transfer', 'linear probe', 'frozen']
    >>> comparison.scores["transfer"].shape
    (3,)
    """
    transfer = transfer_step(estimator, "compare_transfer")
    if not transfer._has_source_weights():
        msg = (
            "compare_transfer compares fine-tuning from pretrained weights with "
            f"training from scratch, but this {type(transfer).__name__} has no "
            "pretrained weights: call fit_source(X, y) on the source task first "
            "(or pass a module instance with trained weights as net)."
        )
        raise ValueError(msg)
    if linear_probe and getattr(transfer, "adapt", None) is not None:
        msg = (
            f"compare_transfer got an estimator with adapt={transfer.adapt!r}, "
            "whose y marks unlabelled rows; the linear probe would train on the "
            "marker as a label. Pass linear_probe=False, and compare adaptation "
            "settings through settings (e.g. {'no adaptation': {'adapt_weight': "
            "0.0}, 'dann': {'adapt': 'dann'}})."
        )
        raise ValueError(msg)
    settings = check_settings(settings)
    scoring_name = _scoring_name(scoring, estimator)
    seed = None
    if random_state is not None:
        if isinstance(random_state, numbers.Integral):
            seed = int(random_state)
        else:
            seed = derive_seed(random_state)

    candidates = {
        SCRATCH: seeded(from_scratch(estimator), seed),
        TRANSFER: seeded(clone(estimator), seed),
    }
    if linear_probe:
        candidates[PROBE] = probe_pipeline(estimator)
    for name, params in settings.items():
        candidates[name] = with_params(estimator, name, params, seed)
    for name, candidate in candidates.items():
        check_steps(name, candidate)

    splitter = check_cv(cv, y, classifier=is_classifier(estimator))
    if seed is not None and isinstance(cv, numbers.Integral):
        # check_cv gives an unshuffled (Stratified)KFold for an int.
        splitter = type(splitter)(n_splits=cv, shuffle=True, random_state=seed)
    splits = list(splitter.split(X, y))
    if sample_weight is not None:
        weights = _check_sample_weight(
            sample_weight, np.empty((len(y), 0)), ensure_non_negative=True
        )

    scores = {}
    for i, (name, candidate) in enumerate(candidates.items(), 1):
        start = time.perf_counter()
        if verbose:
            print(
                f"[sktransfer] compare_transfer: setting {i}/{len(candidates)} "
                f"{name!r}, {len(splits)} folds",
                flush=True,
            )
        try:
            scores[name] = cross_val_score(
                weighted(candidate) if sample_weight is not None else candidate,
                X,
                y,
                cv=splits,
                scoring=scoring,
                n_jobs=n_jobs,
                error_score="raise",
                verbose=3 if verbose else 0,  # scikit-learn prints each fold
                params=None if sample_weight is None else {"sample_weight": weights},
            )
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"(in compare_transfer, setting {name!r})")
            raise
        if verbose:
            print(_progress_line(name, scores[name], scoring_name, start), flush=True)
    comparison = TransferComparison(scores, scoring=scoring_name)
    if comparison.negative_transfer:
        scratch = format_number(scores[SCRATCH].mean(), comparison._scale)
        means = ", ".join(
            f"{name!r} {format_number(scores[name].mean(), comparison._scale)} "
            f"(p={comparison.p_values[name]:.2g})"
            for name in list(scores)[1:]
        )
        msg = (
            "Negative transfer: every transferred setting scores lower than "
            f"training from scratch over {comparison.n_splits} folds (one-sided "
            f"paired t-test, p < {ALPHA}). Mean {scoring_name}: {means}, against "
            f"{scratch} for 'scratch'. The pretrained "
            "weights hurt this target task; consider another source task, fewer "
            "frozen layers, or training from scratch."
        )
        warn_at_user(msg, NegativeTransferWarning)
    return comparison
