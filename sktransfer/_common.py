"""Helpers every room uses: seeds, batch sizes, arrays, warnings, callbacks, losses."""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
from scipy import sparse
from sklearn.utils import check_random_state

from ._compat import _safe_indexing

# The numeric dtypes that the check of X keeps as they are (anything else,
# such as an object array of numbers, becomes float32); the network's input
# dtype is decided from the module once it is built
# (``sktransfer._fit._inputs.input_dtype``).
_NUMERIC_DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]

# How every array reaching a network is checked: numeric, finite; samples may
# have any shape (N x C x H x W images too). Sparse matrices of any format
# become CSR, whose rows ArrayLoader densifies one batch at a time.
_CHECK_X = {
    "dtype": _NUMERIC_DTYPES,
    "allow_nd": True,
    "accept_sparse": "csr",
    "ensure_all_finite": True,
}

# The most training rows a check runs the network on (fewer when the training
# batches are smaller, never fewer than two).
_PROBE_ROWS = 64

# Offsets added to the seed so that pretraining and fine-tuning draw different
# random numbers from one ``random_state``: "head" seeds the new head's
# initial weights and "train" the fine-tuning that follows the build.
_STREAM_OFFSET = {
    "source": 0,
    "target": 1,
    "augment": 2,
    "tta": 3,
    "head": 4,
    "train": 5,
}


@contextmanager
def _unchanged_on_error(estimator):
    """Restore the estimator's attributes if the block raises."""
    saved = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(saved)
        raise


@contextmanager
def _seeded(random_state, phase):
    """Seed torch inside the block without touching the caller's global RNG."""
    if random_state is None:
        yield
        return
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(random_state, phase))
        yield


def _reseed(random_state, phase):
    """Seed torch's global RNG for ``phase``; nothing for ``random_state=None``.

    For use inside a :func:`_seeded` block, which restores the caller's RNG:
    what follows then draws the same numbers whatever was drawn before it in
    the block (such as the initialisation of layers that the pretrained
    weights then replace, which depends on the route the weights took).
    """
    if random_state is not None:
        torch.manual_seed(derive_seed(random_state, phase))


def derive_seed(random_state, stream=None, *, advance=True):
    """Return the torch seed of one random stream of an estimator.

    The one derivation of every seed from ``random_state``: an int drawn from
    ``check_random_state(random_state)`` (as scikit-learn draws one: an int
    gives the same seed on every call, a ``RandomState`` advances), plus the
    stream's offset (``"source"`` 0, ``"target"`` 1, ``"augment"`` 2,
    ``"tta"`` 3, ``"head"`` 4, ``"train"`` 5; none for ``stream=None``), so
    that the streams stay apart. With ``advance=False`` a ``RandomState``
    instance
    is read from a copy and left as it was (prediction changes nothing).
    """
    if not advance and isinstance(random_state, np.random.RandomState):
        random_state = copy.deepcopy(random_state)
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return seed if stream is None else seed + _STREAM_OFFSET[stream]


def _writable(X):
    """Return ``X`` as an array torch can wrap without a warning."""
    if sparse.issparse(X):
        return X  # densified a batch at a time, into new arrays
    if any(stride < 0 for stride in getattr(X, "strides", ())):
        return np.ascontiguousarray(X)  # torch takes no negative strides (X[::-1])
    return X if X.flags.writeable else X.copy()


def _dense_rows(X, stop):
    """Return the first ``stop`` rows of ``X`` as a dense array (to probe a network)."""
    rows = X[:stop]
    # A copy: the probe's network may change its input in place.
    return rows.toarray() if sparse.issparse(rows) else np.array(rows, copy=True)


def _nbytes(X):
    """Return the bytes ``X`` takes in memory (a sparse matrix's three arrays)."""
    if sparse.issparse(X):
        return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return X.nbytes


def _is_2d(y):
    """Whether ``y`` (any array-like, unchecked) is two-dimensional."""
    return np.asarray(y).ndim == 2


def predict_batch_size(net, n_samples):
    """Return the batch size the skorch ``net`` predicts ``n_samples`` with.

    ``iterator_valid__batch_size``, else the net's ``batch_size``; ``-1`` or
    None mean all samples in one batch, as in skorch.
    """
    size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
    return n_samples if size in (-1, None) else size


# Modules whose frames lie between the user's call and the package's code:
# ``fit`` runs under scikit-learn's ``_fit_context`` (a context manager),
# ``clone`` calls ``__sklearn_clone__``, ``transform`` is wrapped by
# ``set_output``'s wrapper, and a ``Pipeline``, ``cross_val_score`` or
# ``GridSearchCV`` (through joblib) calls the estimator for the user.
_INSIDE = ("sktransfer.", "contextlib", "sklearn.", "joblib.")


def warn_at_user(msg, category=UserWarning):
    """Warn with the location of the user's call into sktransfer.

    The one way the package places a warning: the ``stacklevel`` is counted
    at run time, out to the caller of the outermost sktransfer frame (past
    ``contextlib``, scikit-learn and joblib, through which ``fit``,
    ``clone``, a ``Pipeline`` or a search enter it), so it needs no count of
    the call chain. A warning raised under
    skorch's loop or an optimizer's closure points at the user's ``fit`` too.
    """
    # The outermost frame of the package, then out past the frames between it
    # and the user (a warning raised under skorch's loop or an optimizer's
    # closure still points at the user's ``fit``).
    frame, level = sys._getframe(0), 1
    outermost = (frame, level)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_INSIDE[0]):
            outermost = (frame, level)
        frame, level = frame.f_back, level + 1
    frame, level = outermost
    while frame.f_back is not None and (
        frame.f_globals.get("__name__", "").startswith(_INSIDE)
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(msg, category, stacklevel=level)


def install_callback(net, name, callback, *, after=None):
    """Put ``callback``, initialised, among ``net.callbacks_``; return its removal.

    The one way ``fit`` adds a callback of its own to an initialised skorch net.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net.
    name : str
        The callback's name in ``net.callbacks_``.
    callback : skorch.callbacks.Callback
        The callback; ``initialize()`` is called on it.
    after : collection of str or None, default=None
        Put it right after the last callback whose name is in ``after`` (first
        of all when the net has none of them); ``None`` puts it last.

    Returns
    -------
    remove : callable
        Takes out this callback (by identity, and nothing else); for
        ``_skorch._frozen.on_exit`` or a ``finally`` block.
    """
    callback = callback.initialize()
    names = [n for n, _ in net.callbacks_]
    if after is None:
        at = len(names)
    else:
        at = max((i + 1 for i, n in enumerate(names) if n in after), default=0)
    net.callbacks_.insert(at, (name, callback))

    def remove():
        net.callbacks_ = [(n, cb) for n, cb in net.callbacks_ if cb is not callback]

    return remove


@contextmanager
def reduction(criterion, value):
    """Give ``criterion`` the ``reduction`` ``value`` inside the block.

    The one way a loss is computed with another reduction than the
    criterion's own (``"none"``: one loss per sample); the criterion gets its
    own back when the block ends, whatever happens inside.
    """
    own = criterion.reduction
    criterion.reduction = value
    try:
        yield criterion
    finally:
        criterion.reduction = own


def take_rows(X, rows):
    """Return the ``rows`` of ``X``: an array, a DataFrame, a list or a token dict.

    scikit-learn's ``_safe_indexing``, and for a dict of per-row arrays (as a
    tokenizer returns them) the same rows of each.
    """
    if isinstance(X, Mapping):
        return {key: _safe_indexing(value, rows) for key, value in X.items()}
    return _safe_indexing(X, rows)
