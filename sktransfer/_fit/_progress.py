"""Progress that reads well at ``verbose >= 1``.

While each phase trains (inside :func:`sktransfer._fit._guard.training`):

- skorch's epoch table prints without ANSI colour codes when standard output
  is not a terminal (a log file, a CI job, a notebook's captured output):
  its ``PrintLog`` is swapped for :class:`PlainPrintLog` for the phase;
- ``verbose >= 2`` adds skorch's :class:`~skorch.callbacks.ProgressBar`
  (tqdm) inside each epoch;
- when the phase ends, one summary line: epochs run, why training stopped
  (:func:`why_stopped`, the reading that the ConvergenceWarning uses too),
  the best loss and the time taken.

Everything is removed from the net again when the phase ends.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

from skorch.callbacks import EarlyStopping, PrintLog, ProgressBar
from skorch.utils import Ansi

from .._common import install_callback

# The name of the progress bar among the net's callbacks while training.
_PROGRESS_CALLBACK = "sktransfer_progress_bar"


class PlainPrintLog(PrintLog):
    """skorch's ``PrintLog`` without colour codes, for output that is not a terminal."""

    # Prints the history only (see sktransfer._skorch._safety).
    sktransfer_safe = True

    def format_row(self, row, key, color):
        """Format a value as ``PrintLog`` does, without the colour of best values."""
        return super().format_row(row, key, color="").replace(Ansi.ENDC.value, "")


def why_stopped(net, epochs_before):
    """Say why the last training call of ``net`` stopped.

    Parameters
    ----------
    net : skorch.NeuralNet
        The net after ``partial_fit``.
    epochs_before : int
        The length of its history before the call.

    Returns
    -------
    reason : {"early_stopping", "max_epochs", "other"}
        An ``EarlyStopping`` callback fired; all ``max_epochs`` ran; or
        something else ended training (a callback, an interruption).
    stopper : EarlyStopping or None
        The callback that fired, for ``"early_stopping"``.
    """
    stoppers = [cb for _, cb in net.callbacks_ if isinstance(cb, EarlyStopping)]
    fired = [cb for cb in stoppers if cb.misses_ >= cb.patience]
    if fired:
        return "early_stopping", fired[0]
    if len(net.history) - epochs_before >= net.max_epochs:
        return "max_epochs", None
    return "other", None


def summary(net, what, epochs_before, seconds, partial=False):
    """Return the one-line summary of a training call (see the module's notes)."""
    epochs = net.history[epochs_before:]
    n = len(epochs)
    line = f"[sktransfer] {what.capitalize()} done: {n} epoch{'s' * (n != 1)}"
    if partial:
        line += " (partial_fit)"
    else:
        reason, stopper = why_stopped(net, epochs_before)
        if reason == "early_stopping":
            line += (
                f", stopped early at epoch {n}: {stopper.monitor} did not improve "
                f"by {stopper.threshold:g} for {stopper.patience} epochs"
            )
        elif reason == "max_epochs":
            line += f", max_epochs={net.max_epochs} reached"
        else:
            line += f", stopped by a callback at epoch {n}"
    key = "valid_loss" if any("valid_loss" in row for row in epochs) else "train_loss"
    losses = [row.get(key) for row in epochs]
    scored = [(loss, i) for i, loss in enumerate(losses, 1) if _finite(loss)]
    if scored:
        best, epoch = min(scored)
        line += f"; best {key} {best:.4g} at epoch {epoch}"
    return line + f"; {seconds:.1f} s."


def _finite(value):
    return isinstance(value, float | int) and math.isfinite(value)


def _plain_print_logs(net):
    """Swap each of skorch's ``PrintLog`` printing to stdout for a plain one."""
    swapped = []
    for i, (name, callback) in enumerate(net.callbacks_):
        if type(callback) is PrintLog and callback.sink is print:
            plain = PlainPrintLog(**callback.get_params()).initialize()
            net.callbacks_[i] = (name, plain)
            swapped.append((i, name, callback, plain))
    return swapped


@contextmanager
def reporting(net, what, verbose, partial=False):
    """Report the training call inside the block at ``verbose >= 1``.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net about to train.
    what : str
        ``"pretraining"`` or ``"fine-tuning"``.
    verbose : int
        The estimator's ``verbose``.
    partial : bool, default=False
        Whether the call is one ``partial_fit`` epoch.
    """
    if not verbose:
        yield
        return
    swapped = [] if _is_terminal() else _plain_print_logs(net)
    remove_bar = None
    if verbose >= 2:
        remove_bar = install_callback(net, _PROGRESS_CALLBACK, ProgressBar())
    epochs_before, start = len(net.history), time.perf_counter()
    completed = False
    try:
        yield
        completed = True
    finally:
        for i, name, original, plain in swapped:
            if net.callbacks_[i][1] is plain:
                net.callbacks_[i] = (name, original)
        if remove_bar is not None:
            remove_bar()
    if completed:
        seconds = time.perf_counter() - start
        print(summary(net, what, epochs_before, seconds, partial), flush=True)


def _is_terminal():
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False
