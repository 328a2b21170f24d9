"""Plots: the training history of a transfer estimator, and comparisons.

matplotlib is optional (``pip install ".[plot]"`` from a clone): it is imported
when a plot is drawn, never when this module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import NotFittedError

from .._estimators._pipeline import transfer_step

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_history"]

# Colours of the two phases, and of training from scratch in comparisons.
_SOURCE_COLOUR = "C0"
_TARGET_COLOUR = "C1"
_SCRATCH_COLOUR = "black"


def _import_pyplot(what):
    """Import and return ``matplotlib.pyplot``, or say how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = (
            f"{what} requires matplotlib: pip install '.[plot]' from a clone of "
            "sktransfer (or pip install matplotlib)."
        )
        raise ImportError(msg) from exc
    return plt


def _axes(plt, ax):
    """Return ``ax``, or the Axes of a new figure when it is None."""
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _losses(history, key):
    """Return the ``key`` of every epoch of ``history``; NaN where it is missing."""
    return np.array([row.get(key, np.nan) for row in history], dtype=float)


def plot_history(estimator: Any, ax: Axes | None = None) -> Axes:
    """Plot the loss per epoch of pretraining and of fine-tuning.

    The training loss of each epoch, and the validation loss when the net
    holds out a validation set (``train_split``), on one set of axes: first
    the pretraining epochs of :meth:`~TransferClassifier.fit_source` (when the
    estimator is pretrained), then the fine-tuning epochs of the last
    :meth:`~TransferClassifier.fit` (when it is fitted), numbered on from
    where pretraining stopped. A vertical line divides the two phases. The
    losses are the ones skorch records, the source criterion's and the
    target's; with different tasks they need not be on the same scale.

    Read more in the :ref:`User Guide <fine_tuning>`.

    Parameters
    ----------
    estimator : TransferClassifier, TransferRegressor or Pipeline
        A pretrained or fitted transfer estimator, or a pipeline ending in
        one.
    ax : matplotlib Axes, default=None
        The axes to draw on; ``None`` draws on a new figure.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on. Each curve is a line labelled with its phase
        (``"pretraining"``, and ``"fine-tuning"`` or, for a network trained
        from scratch, ``"training"``) and its loss (``"train loss"``,
        ``"valid loss"``).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is neither pretrained nor fitted.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    compare_transfer : Cross-validate fine-tuning against training from scratch.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skorch import NeuralNetClassifier
    >>> from torch import nn
    >>> from sktransfer import MLP, TransferClassifier, plot_history
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> net = NeuralNetClassifier(
    ...     MLP, criterion=nn.CrossEntropyLoss, max_epochs=3, train_split=None
    ... )
    >>> clf = TransferClassifier(net, random_state=0)
    >>> clf = clf.fit_source(X[y < 5], y[y < 5]).fit(X[y >= 5][:50], y[y >= 5][:50])
    >>> ax = plot_history(clf)
    >>> [line.get_label() for line in ax.get_lines()][:2]
    ['pretraining: train loss', 'fine-tuning: train loss']
    """
    plt = _import_pyplot("plot_history")
    transfer = transfer_step(estimator, "plot_history")
    pretrained = getattr(transfer, "_pretrained", None)
    fitted = hasattr(transfer, "net_")
    # pretrained=False fits from fresh weights: pretraining is not its history.
    unused = fitted and not transfer.pretrained
    source = [] if pretrained is None or unused else list(pretrained.history)
    target = transfer.net_.history.to_list() if fitted else []
    if not source and not target:
        msg = (
            f"This {type(transfer).__name__} has neither been pretrained nor "
            "fitted, so it has no history to plot; call fit_source(X, y) or "
            "fit(X, y) first."
        )
        raise NotFittedError(msg)

    ax = _axes(plt, ax)
    fine_tuned = transfer._has_source_weights()
    phases = [
        ("pretraining", source, _SOURCE_COLOUR),
        ("fine-tuning" if fine_tuned else "training", target, _TARGET_COLOUR),
    ]
    start = 0
    for phase, history, colour in phases:
        if not history:
            continue
        epochs = np.arange(start + 1, start + len(history) + 1)
        marker = "o" if len(history) == 1 else None  # a lone epoch stays visible
        for key, style in (("train_loss", "-"), ("valid_loss", "--")):
            losses = _losses(history, key)
            if np.isnan(losses).all():
                continue
            ax.plot(
                epochs,
                losses,
                linestyle=style,
                marker=marker,
                color=colour,
                label=f"{phase}: {key.replace('_', ' ')}",
            )
        if start:  # a second phase: divide it from the first
            ax.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
            for x, text, align in (
                (start + 0.5, "pretraining ", "right"),
                (start + 0.5, f" {phase}", "left"),
            ):
                ax.annotate(
                    text,
                    xy=(x, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -4),
                    textcoords="offset points",
                    ha=align,
                    va="top",
                    color="grey",
                )
        start += len(history)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{type(transfer).__name__} training history")
    ax.legend()
    return ax


def _plot_comparison(scores, scoring, ax, p_values=None):
    """Draw the per-fold scores of each setting of a comparison; return the Axes.

    Settings are along the x axis, in the order of ``scores`` (scratch first).
    Each setting is one scatter of its fold scores plus a bar at its mean;
    the scores of one fold are joined across settings by a thin grey line,
    and a dashed line marks the mean of training from scratch. Folds with
    equal scores in a setting are spread sideways (jitter) and counted
    (``×3``). Each transferred setting's p-value (``p_values``, the paired
    test that it scores lower than scratch) is written above it.
    """
    plt = _import_pyplot("TransferComparison.plot")
    ax = _axes(plt, ax)
    names = list(scores)
    table = np.column_stack([scores[name] for name in names])  # folds x settings
    positions = np.arange(len(names))
    x = np.empty_like(table)
    for i in positions:
        x[:, i], ties = _spread_ties(table[:, i], i)
        for score, count, right in ties:
            ax.annotate(
                f"×{count}",
                xy=(right, score),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize="small",
                color="grey",
            )
    for fold_x, fold in zip(x, table, strict=True):
        ax.plot(fold_x, fold, color="grey", linewidth=0.6, alpha=0.5, zorder=1)
    reference = ax.axhline(
        table[:, 0].mean(),
        color=_SCRATCH_COLOUR,
        linestyle="--",
        linewidth=1,
        label="scratch mean",
        zorder=0,
    )
    for i, name in enumerate(names):
        colour = _SCRATCH_COLOUR if i == 0 else f"C{(i - 1) % 10}"
        ax.scatter(x[:, i], table[:, i], color=colour, zorder=2, label=name)
        ax.plot(
            [i - 0.2, i + 0.2],
            [table[:, i].mean()] * 2,
            color=colour,
            linewidth=2.5,
            zorder=3,
        )
        p_value = (p_values or {}).get(name)
        if i and p_value is not None:
            ax.annotate(
                f"p = {p_value:.2g}" if np.isfinite(p_value) else "p: n/a",
                xy=(i, 1),
                xycoords=("data", "axes fraction"),
                xytext=(0, -4),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize="small",
            )
    ax.legend(handles=[reference])
    ax.set_xticks(positions, names)
    if sum(len(name) for name in names) > 50:  # long names would overlap
        ax.tick_params(axis="x", labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlim(-0.5, len(names) - 0.5)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.12 * (high - low))  # room for the p-values
    ax.set_xlabel("setting")
    ax.set_ylabel(scoring)
    title = f"{len(table)}-fold cross-validation: fold scores and means (bars)"
    if p_values:
        title += "\np: one-sided paired t-test that a setting scores lower than scratch"
    ax.set_title(title)
    return ax


def _spread_ties(values, centre, width=0.12):
    """Return x positions for ``values`` at ``centre``, equal values side by side.

    Also returns ``(value, count, rightmost x)`` for each value that occurs
    more than once, to label it.
    """
    x = np.full(len(values), float(centre))
    ties = []
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    for k, (value, count) in enumerate(zip(unique, counts, strict=True)):
        if count < 2:
            continue
        members = np.flatnonzero(inverse == k)
        x[members] = centre + np.linspace(-width, width, count)
        ties.append((value, int(count), centre + width))
    return x, ties
