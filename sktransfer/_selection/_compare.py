"""Does pretraining help? ``compare_transfer`` and its result.

:func:`compare_transfer` cross-validates training from scratch, fine-tuning
from the pretrained weights, and any other fine-tuning settings on the same
splits, and tests whether every transferred setting is worse than scratch
(negative transfer).
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import check_cv, cross_val_score
from sklearn.pipeline import Pipeline

from .._common import derive_seed
from .._compat import _check_sample_weight
from .._estimators._base import _SCRATCH_PARAMS, _BaseTransfer
from .._estimators._pipeline import WeightedPipeline, transfer_step
from ._plot import _plot_comparison
from ._select import linear_probe

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

__all__ = ["NegativeTransferWarning", "TransferComparison", "compare_transfer"]

# Level of the one-sided paired t-test that declares a setting worse than scratch.
_ALPHA = 0.05

# The names of the two settings every comparison has.
_SCRATCH = "scratch"
_TRANSFER = "transfer"
_PROBE = "linear probe"


class NegativeTransferWarning(UserWarning):
    """Warning that every transferred setting scores worse than training from scratch.

    Raised by :func:`compare_transfer` when, for each fine-tuning setting, the
    per-fold scores are lower than those of the same network trained from
    scratch on the same splits, beyond fold-to-fold noise (a one-sided paired
    t-test at the 5% level). The source task then hurts the target task.

    Read more in the :ref:`User Guide <fine_tuning>`.
    """


def _paired_worse(scores, reference):
    """Test whether ``scores`` are lower than ``reference``, fold by fold.

    A one-sided paired t-test on the per-fold differences. Differences with
    no spread (all equal) have no t statistic: the scores are then worse if
    and only if the difference is negative. A single fold cannot be tested.

    Returns
    -------
    p_value : float
        The one-sided p-value; 0 or 1 for differences without spread, NaN for
        a single fold.
    worse : bool
        Whether ``p_value`` is below the 5% level.
    """
    diff = scores - reference
    if len(diff) < 2:
        return np.nan, False
    mean = diff.mean()
    if np.ptp(diff) <= 1e-12 * max(1.0, np.abs(diff).max()):
        return (0.0 if mean < 0 else 1.0), bool(mean < 0)
    p_value = float(stats.ttest_rel(scores, reference, alternative="less").pvalue)
    return p_value, p_value < _ALPHA


def _p_higher(scores, reference):
    """Return the p-value that ``scores`` are higher than ``reference``, fold by fold.

    As :func:`_paired_worse`, the other way round: 0 or 1 for differences
    without spread, NaN for a single fold.
    """
    diff = scores - reference
    if len(diff) < 2:
        return np.nan
    if np.ptp(diff) <= 1e-12 * max(1.0, np.abs(diff).max()):
        return 0.0 if diff.mean() > 0 else 1.0
    return float(stats.ttest_rel(scores, reference, alternative="greater").pvalue)


def _p(value):
    """Format a p-value for a sentence: two significant digits, or "< 0.001"."""
    if not np.isfinite(value):
        return "no p-value (one fold)"
    return "p < 0.001" if value < 1e-3 else f"p = {value:.2g}"


def _format_number(value, scale, sign=""):
    """Format a score with three decimals, or four significant digits if large.

    ``scale`` is the largest absolute score of the table; ``sign="+"`` shows
    the sign of positive numbers too.
    """
    if not np.isfinite(value):
        return str(value)
    return f"{value:{sign}.3f}" if scale < 1000 else f"{value:{sign}.4g}"


class TransferComparison:
    """Cross-validated scores of training from scratch and of transfer settings.

    Returned by :func:`compare_transfer`. The first setting, ``"scratch"``, is
    the network trained from freshly initialised weights; every other setting
    fine-tunes from pretrained weights and is compared with it fold by fold.

    Read more in the :ref:`User Guide <fine_tuning>`.

    Parameters
    ----------
    scores : dict of str to array-like of shape (n_splits,)
        The test score of each fold for each setting, the reference
        (training from scratch) first; every setting scored on the same
        folds, in the same order.
    scoring : str, default="score"
        Name of the score, for the table and the plot. Higher is better, as
        for every scikit-learn scorer.

    Attributes
    ----------
    scores : dict of str to ndarray of shape (n_splits,)
        The test score of each fold for each setting: ``"scratch"``,
        ``"transfer"``, then the named settings, in this order.
    scoring : str
        Name of the score.
    n_splits : int
        Number of cross-validation folds.
    p_values : dict of str to float
        For each transferred setting, the p-value of the one-sided paired
        t-test that it scores lower than scratch (see Notes).
    best : str
        The transferred setting with the highest mean score.
    gain : float
        Mean score of ``best`` minus mean score of scratch; negative when no
        transferred setting beats scratch on average.
    negative_transfer : bool
        True when every transferred setting scores significantly lower than
        scratch (p-value below 0.05).
    verdict : str
        One sentence a user can act on: whether transfer beat scratch on
        these data, the best transferred setting's mean score against
        scratch's, and the p-value of the paired test that decides it (that
        it is higher, or that it is lower); the last line of the printed
        table.

    See Also
    --------
    compare_transfer : Compute a comparison.

    Notes
    -----
    A transferred setting scores lower than scratch when a one-sided paired
    t-test on the per-fold differences of scores (setting minus scratch,
    :func:`scipy.stats.ttest_rel` with ``alternative="less"``) gives a p-value
    below 0.05. Pairing by fold removes what the folds have in common (an
    easy or a hard test fold). When the differences are all equal the test is
    undefined; the setting then scores lower if and only if the difference is
    negative (p-value 0, otherwise 1). With a single fold nothing is tested:
    the p-value is NaN and the setting does not count as lower. The folds of
    cross-validation share training samples, so the test is approximate (it
    tends to be optimistic about differences); treat a verdict near the
    threshold as undecided.
    """

    def __init__(self, scores: Mapping[str, ArrayLike], *, scoring: str = "score"):
        self.scores = {
            str(name): np.asarray(values, dtype=float)
            for name, values in scores.items()
        }
        self.scoring = scoring
        names = list(self.scores)
        if len(names) < 2:
            msg = (
                "A TransferComparison needs the scores of scratch and of at least "
                f"one transferred setting; got settings {names}."
            )
            raise ValueError(msg)
        lengths = {name: values.shape for name, values in self.scores.items()}
        if len(set(lengths.values())) != 1 or len(lengths[names[0]]) != 1:
            msg = f"Every setting needs one score per fold; got shapes {lengths}."
            raise ValueError(msg)
        reference = self.scores[names[0]]
        self.n_splits = len(reference)
        transferred = names[1:]
        tests = {
            name: _paired_worse(self.scores[name], reference) for name in transferred
        }
        self.p_values = {name: p_value for name, (p_value, _) in tests.items()}
        self.negative_transfer = all(worse for _, worse in tests.values())
        means = {name: self.scores[name].mean() for name in transferred}
        self.best = max(transferred, key=means.__getitem__)
        self.gain = float(means[self.best] - reference.mean())

    @property
    def verdict(self) -> str:
        """One sentence a user can act on: did transfer beat scratch, by what test."""
        scratch = self._reference
        best = self.best
        ours = self.scores[best].mean()
        theirs = self.scores[scratch].mean()
        scale = self._scale
        versus = (
            f"best transfer setting {best!r}, {self.scoring} "
            f"{_format_number(ours, scale)} vs {_format_number(theirs, scale)} "
            f"for {scratch}"
        )
        test = f"over {self.n_splits} folds, one-sided paired t-test"
        if self.negative_transfer:
            return (
                f"Transfer hurt on these data: every transferred setting scored "
                f"lower than {scratch} ({versus}, {_p(self.p_values[best])} "
                f"that it is lower, {test}); train from {scratch}, or try another "
                "source task or fewer frozen layers."
            )
        p_higher = _p_higher(self.scores[best], self.scores[scratch])
        if self.gain > 0 and p_higher < _ALPHA:
            return (
                f"Transfer beat {scratch} on these data: {versus}, "
                f"{_p(p_higher)} that it is higher ({test}); use {best!r}."
            )
        if self.gain > 0:
            return (
                f"Transfer did not clearly beat {scratch} on these data: {versus}, "
                f"{_p(p_higher)} that it is higher ({test}), not below "
                f"{_ALPHA}; more folds or more target data would tell them apart."
            )
        return (
            f"Transfer did not beat {scratch} on these data: {versus}, "
            f"{_p(self.p_values[best])} that it is lower ({test}); train "
            f"from {scratch}, or try another source task or other settings."
        )

    @property
    def _scale(self):
        return max(np.abs(values).max() for values in self.scores.values())

    @property
    def _reference(self):
        return next(iter(self.scores))

    def __repr__(self) -> str:
        names = list(self.scores)
        reference = self.scores[names[0]].mean()
        scale = self._scale
        header = f"{self.scoring} mean ± std", f"vs {names[0]}", "p (lower)"
        rows = [("setting", *header)]
        for name in names:
            values = self.scores[name]
            mean = _format_number(values.mean(), scale)
            std = _format_number(values.std(), scale)
            if name == names[0]:
                diff = p_value = "-"
            else:
                diff = _format_number(values.mean() - reference, scale, "+")
                p_value = f"{self.p_values[name]:.3g}"
            rows.append((name, f"{mean} ± {std}", diff, p_value))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            f"TransferComparison({self.n_splits}-fold cross-validation, "
            f"scoring={self.scoring!r})"
        ]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [
                cell.rjust(width)
                for cell, width in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)

    __str__ = __repr__

    def to_frame(self) -> Any:
        """Return the scores as a pandas DataFrame, one row per fold.

        Returns
        -------
        frame : pandas.DataFrame of shape (n_splits, n_settings)
            One column per setting, in the order of :attr:`scores` (the
            columns' name is ``"setting"``), one row per fold (the index,
            named ``"fold"``, counts from 0). For the tidy (long) form, one
            row per fold and setting, use
            ``frame.melt(ignore_index=False, value_name="score")``.

        Raises
        ------
        ImportError
            If pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            msg = "TransferComparison.to_frame requires pandas: pip install pandas."
            raise ImportError(msg) from exc
        frame = pd.DataFrame(self.scores, index=pd.RangeIndex(self.n_splits))
        frame.index.name = "fold"
        frame.columns.name = "setting"
        return frame

    def plot(self, ax: Axes | None = None) -> Axes:
        """Plot the score of every fold for every setting.

        Settings are along the x axis, scratch first and in black. Each
        setting's fold scores are points, its mean a short bar; the scores of
        one fold are joined across settings by a thin grey line, so that a
        fold where transfer helps shows as a rising line. Equal fold scores
        within a setting are spread sideways and counted (``×3``). A dashed
        line marks the mean score of scratch, and each transferred setting's
        p-value (:attr:`p_values`) is written above it.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            The axes to draw on; ``None`` draws on a new figure.

        Returns
        -------
        ax : matplotlib Axes
            The axes drawn on, with one scatter (``ax.collections``) per
            setting.

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        """
        return _plot_comparison(self.scores, self.scoring, ax, self.p_values)


def _from_scratch(estimator):
    """Return an unfitted copy of ``estimator`` that trains from fresh weights.

    The public switch ``pretrained=False``, with nothing frozen and no other
    fine-tuning method, on the transfer estimator (the last step of a
    pipeline).
    """
    params = dict(_SCRATCH_PARAMS)
    if isinstance(estimator, Pipeline):
        name = estimator.steps[-1][0]
        params = {f"{name}__{key}": value for key, value in params.items()}
    return clone(estimator).set_params(**params)


def _linear_probe(estimator):
    """Return the linear probe: a linear model on the pretrained features.

    Standardised head inputs of the pretrained network
    (:class:`PretrainedFeatures`), then :class:`LogisticRegressionCV` for a
    classifier or :class:`RidgeCV` otherwise, each choosing its L2 strength
    by cross-validation on the training labels (:func:`linear_probe`); a
    pipeline's earlier steps come first, under their own names (the probe's
    steps take names no earlier step has).
    """
    steps = list(estimator.steps[:-1]) if isinstance(estimator, Pipeline) else []
    probe = linear_probe(transfer_step(estimator, "compare_transfer"))
    taken = {name for name, _ in steps}
    for name, step in zip(
        ("pretrainedfeatures", "standardscaler", "probe"), probe, strict=True
    ):
        steps.append((_free_name(name, taken), step))
        taken.add(steps[-1][0])
    return type(probe)(steps)


def _weighted(candidate):
    """Return a pipeline ``candidate`` as a :class:`WeightedPipeline`, else as is."""
    if isinstance(candidate, Pipeline) and not isinstance(candidate, WeightedPipeline):
        return WeightedPipeline(**candidate.get_params(deep=False))
    return candidate


def _free_name(name, taken):
    """Return ``name``, or ``name`` with the first free suffix ``-2``, ``-3``, ..."""
    if name not in taken:
        return name
    suffix = 2
    while f"{name}-{suffix}" in taken:
        suffix += 1
    return f"{name}-{suffix}"


def _seed(estimator, seed):
    """Set the ``random_state`` of the transfer estimator in ``estimator``.

    The linear probe (a pipeline whose last step is not a transfer
    estimator) is left as it is: its folds are its own.
    """
    if seed is None:
        return estimator
    if isinstance(estimator, Pipeline):
        name, step = estimator.steps[-1]
        if not isinstance(step, _BaseTransfer):
            return estimator
        return estimator.set_params(**{f"{name}__random_state": seed})
    return estimator.set_params(random_state=seed)


def _check_steps(name, candidate):
    """Raise a ValueError before any fit if a pipeline's step names clash.

    scikit-learn checks a pipeline's names only when it is fitted, which in
    ``compare_transfer`` would be after every earlier setting had run.
    """
    if not isinstance(candidate, Pipeline):
        return
    names = [step for step, _ in candidate.steps]
    repeated = sorted({step for step in names if names.count(step) > 1})
    bad = [step for step in names if "__" in step]
    if repeated or bad:
        msg = (
            f"The pipeline of the setting {name!r} has step names "
            f"{names}, of which {repeated or bad} are "
            + ("repeated" if repeated else "not valid (they contain '__')")
            + "; a pipeline's step names must be unique and free of '__'."
        )
        raise ValueError(msg)


def _check_settings(settings):
    """Check the ``settings`` of compare_transfer; return them as a dict."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        msg = (
            "settings must be a dict mapping a setting's name to a dict of "
            f"parameters, e.g. {{'frozen backbone': {{'frozen': 'features.*'}}}}; "
            f"got {type(settings).__name__}: {settings!r}."
        )
        raise TypeError(msg)
    seen = {_SCRATCH: _SCRATCH, _TRANSFER: _TRANSFER, _PROBE: _PROBE}
    for name, params in settings.items():
        if not isinstance(name, str):
            msg = (
                f"Setting names must be strings; got {name!r} of type "
                f"{type(name).__name__}."
            )
            raise TypeError(msg)
        key = name.strip().casefold()
        if not key:
            msg = f"Setting names must not be empty; got {name!r}."
            raise ValueError(msg)
        if key in seen:
            if seen[key] in (_SCRATCH, _TRANSFER, _PROBE):
                msg = (
                    f"The setting name {name!r} is reserved: every comparison has "
                    f"{_SCRATCH!r} (training from scratch), {_TRANSFER!r} "
                    "(fine-tuning with the estimator's own parameters) and "
                    f"{_PROBE!r} (a linear model on the pretrained features). "
                    "Name it otherwise."
                )
            else:
                msg = (
                    f"The setting names {seen[key]!r} and {name!r} are duplicates "
                    "(names are compared ignoring case and surrounding spaces)."
                )
            raise ValueError(msg)
        seen[key] = name
        if not isinstance(params, Mapping):
            msg = (
                f"The setting {name!r} must be a dict of parameters to set on the "
                f"estimator, e.g. {{'frozen': 'features.*'}}; got "
                f"{type(params).__name__}: {params!r}."
            )
            raise TypeError(msg)
    return dict(settings)


def _with_params(estimator, name, params, seed):
    """Return a clone of ``estimator`` seeded and with a setting's ``params``."""
    candidate = _seed(clone(estimator), seed)
    try:
        candidate.set_params(**params)
        transfer_step(candidate, "compare_transfer")._validate_params()
    except (TypeError, ValueError) as exc:
        msg = f"Invalid parameters {dict(params)!r} in the setting {name!r}: {exc}"
        if isinstance(candidate, Pipeline) and any("__" not in k for k in params):
            step = candidate.steps[-1][0]
            prefixed = {f"{step}__{key}": value for key, value in params.items()}
            msg += f" On a pipeline, name the transfer estimator's step: {prefixed!r}."
        raise type(exc)(msg) from exc
    return candidate


def _progress_line(name, scores, scoring_name, start):
    """Return the line ``compare_transfer(verbose=1)`` prints after a setting."""
    scale = np.abs(scores).max()
    return (
        f"[sktransfer] compare_transfer: {name!r} done: {scoring_name} "
        f"{_format_number(scores.mean(), scale)} ± "
        f"{_format_number(scores.std(), scale)} over {len(scores)} folds "
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
    settings = _check_settings(settings)
    scoring_name = _scoring_name(scoring, estimator)
    seed = None
    if random_state is not None:
        if isinstance(random_state, numbers.Integral):
            seed = int(random_state)
        else:
            seed = derive_seed(random_state)

    candidates = {
        _SCRATCH: _seed(_from_scratch(estimator), seed),
        _TRANSFER: _seed(clone(estimator), seed),
    }
    if linear_probe:
        candidates[_PROBE] = _linear_probe(estimator)
    for name, params in settings.items():
        candidates[name] = _with_params(estimator, name, params, seed)
    for name, candidate in candidates.items():
        _check_steps(name, candidate)

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
                _weighted(candidate) if sample_weight is not None else candidate,
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
        scratch = _format_number(scores[_SCRATCH].mean(), comparison._scale)
        means = ", ".join(
            f"{name!r} {_format_number(scores[name].mean(), comparison._scale)} "
            f"(p={comparison.p_values[name]:.2g})"
            for name in list(scores)[1:]
        )
        msg = (
            "Negative transfer: every transferred setting scores lower than "
            f"training from scratch over {comparison.n_splits} folds (one-sided "
            f"paired t-test, p < {_ALPHA}). Mean {scoring_name}: {means}, against "
            f"{scratch} for 'scratch'. The pretrained "
            "weights hurt this target task; consider another source task, fewer "
            "frozen layers, or training from scratch."
        )
        warnings.warn(msg, NegativeTransferWarning, stacklevel=2)
    return comparison
