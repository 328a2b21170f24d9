"""The result of ``compare_transfer``: per-fold scores, the paired test, the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ._plot import _plot_comparison

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import ArrayLike

__all__ = ["NegativeTransferWarning", "TransferComparison"]


# Level of the one-sided paired t-test that declares a setting worse than scratch.
ALPHA = 0.05


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
    return p_value, p_value < ALPHA


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


def format_number(value, scale, sign=""):
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
            f"{format_number(ours, scale)} vs {format_number(theirs, scale)} "
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
        if self.gain > 0 and p_higher < ALPHA:
            return (
                f"Transfer beat {scratch} on these data: {versus}, "
                f"{_p(p_higher)} that it is higher ({test}); use {best!r}."
            )
        if self.gain > 0:
            return (
                f"Transfer did not clearly beat {scratch} on these data: {versus}, "
                f"{_p(p_higher)} that it is higher ({test}), not below "
                f"{ALPHA}; more folds or more target data would tell them apart."
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
            mean = format_number(values.mean(), scale)
            std = format_number(values.std(), scale)
            if name == names[0]:
                diff = p_value = "-"
            else:
                diff = format_number(values.mean() - reference, scale, "+")
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
