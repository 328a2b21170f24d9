"""Helpers shared by the estimator's source and target phases."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from scipy import sparse
from sklearn.utils import check_random_state

# How every array reaching a network is checked: float32, finite; samples may
# have any shape (N x C x H x W images too). Sparse matrices of any format
# become CSR, whose rows ArrayLoader densifies one batch at a time.
_CHECK_X = {
    "dtype": np.float32,
    "allow_nd": True,
    "accept_sparse": "csr",
    "ensure_all_finite": True,
}

# Offsets added to the seed so that pretraining and fine-tuning draw different
# random numbers from one ``random_state``.
_PHASE_SEED = {"source": 0, "target": 1}


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


def derive_seed(random_state):
    """Return the int seed drawn from ``random_state``, as scikit-learn draws one.

    An int gives the same seed on every call; a ``RandomState`` advances; None
    draws from NumPy's global generator. The one place a seed is derived.
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def predict_batch_size(net, n_samples):
    """Return the batch size the skorch ``net`` predicts ``n_samples`` with.

    ``iterator_valid__batch_size`` if set, else ``batch_size``; ``-1`` (or
    None) means all samples at once, as skorch reads it.
    """
    size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
    return n_samples if size in (-1, None) else size


@contextmanager
def _seeded(random_state, phase):
    """Seed torch inside the block without touching the caller's global RNG."""
    if random_state is None:
        yield
        return
    seed = derive_seed(random_state)
    with torch.random.fork_rng():
        torch.manual_seed(seed + _PHASE_SEED[phase])
        yield


def _writable(X):
    """Return ``X`` as an array torch can wrap without a warning."""
    if sparse.issparse(X):
        return X  # densified a batch at a time, into new arrays
    return X if X.flags.writeable else X.copy()


def _dense_rows(X, stop):
    """Return the first ``stop`` rows of ``X`` as a dense array (to probe a network)."""
    rows = X[:stop]
    return rows.toarray() if sparse.issparse(rows) else rows


def _nbytes(X):
    """Return the bytes ``X`` takes in memory (a sparse matrix's three arrays)."""
    if sparse.issparse(X):
        return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return X.nbytes


def _is_2d(y):
    """Whether ``y`` (any array-like, unchecked) is two-dimensional."""
    return np.asarray(y).ndim == 2
