"""Source and target agree on their inputs: checks between ``fit_source`` and ``fit``.

Pure checks over the pretrained record and the target's data, called by the
estimators: the target's feature names against those seen by ``fit_source``
(as scikit-learn checks them between ``fit`` and ``predict``), the kind of
data ``fit`` takes, the keys of ``source_params``, what a failing network says
about the sample shapes, and the fitted state that ``fit_source`` clears.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from scipy import sparse
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.utils.data import Dataset

from .._common import _CHECK_X, _writable, warn_at_user
from .._compat import _get_feature_names
from .._torch._probe import takes_indices

# Private fitted attributes of ``fit`` (the public ones end in "_").
_PRIVATE_FITTED = (
    "_sample_shape",
    "_y_ndim",
    "_y_mean",
    "_y_scale",
    "_predict_stage",
    "_input_dtype",
)

# Significand bits of each floating dtype: integers of larger magnitude than
# 2**bits are not all representable.
_SIGNIFICAND_BITS = {"float16": 11, "float32": 24, "float64": 53}

# Bytes of X checked at a time for values a conversion would change.
_CHECK_CHUNK_BYTES = 64 * 2**20


def weights_dtype(module):
    """Return the floating dtype of ``module``'s weights (float32 without any).

    The first floating parameter or buffer decides: float64 for a module
    made with ``.double()``, float16 for ``.half()``; bfloat16, which NumPy
    has not, and float32 give float32.
    """
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dtype.is_floating_point:
            if tensor.dtype in (torch.float64, torch.float16):
                return np.dtype(str(tensor.dtype).removeprefix("torch."))
            break
    return np.dtype(np.float32)


def input_dtype(module, dtype):
    """Return the dtype in which ``module`` takes samples of dtype ``dtype``.

    Integer and bool samples stay integer, as int64, for a network that
    holds an ``nn.Embedding`` or ``nn.EmbeddingBag`` (token ids, category
    codes); every other sample becomes the floating dtype of the network's
    weights (:func:`weights_dtype`): float32 by default, float64 for a
    float64 module.

    Parameters
    ----------
    module : torch.nn.Module
        The initialised network.
    dtype : numpy.dtype
        The dtype of the samples as the user gave them.

    Returns
    -------
    dtype : numpy.dtype
    """
    if np.dtype(dtype).kind in "biu" and takes_indices(module):
        return np.dtype(np.int64)
    return weights_dtype(module)


def _chunks(X):
    """Yield the values of ``X`` (array, memmap or sparse matrix) in chunks."""
    if sparse.issparse(X):
        yield X.data
        return
    if X.ndim == 0 or len(X) == 0:
        yield np.asarray(X)
        return
    step = max(1, _CHECK_CHUNK_BYTES // max(1, X[0].nbytes))
    for start in range(0, len(X), step):
        yield np.asarray(X[start : start + step])


def _changed_values(X, dtype):
    """Return ``(count, largest, what)`` of the values of ``X`` that ``dtype`` changes.

    None when converting to ``dtype`` keeps every value.
    """
    src, dst = np.dtype(X.dtype), np.dtype(dtype)
    if src == dst or src.kind == "b":
        return None
    if dst.kind == "f" and src.kind in "iu":
        limit = 2 ** _SIGNIFICAND_BITS[dst.name]
        what = f"integer(s) of magnitude above 2**{_SIGNIFICAND_BITS[dst.name]}"

        def bad(chunk):
            return (
                (chunk > limit) | (chunk < -limit) if src.kind == "i" else chunk > limit
            )

    elif dst.kind == "f" and src.kind == "f" and src.itemsize > dst.itemsize:
        limit = float(np.finfo(dst).max)
        what = f"value(s) beyond {dst.name}'s largest, {limit:.4g}"

        def bad(chunk):
            return np.abs(chunk) > limit

    elif dst.kind == "i" and src.kind == "u" and src.itemsize >= dst.itemsize:
        limit = int(np.iinfo(dst).max)
        what = f"integer(s) above {dst.name}'s largest, {limit}"

        def bad(chunk):
            return chunk > limit

    elif dst.kind == "i" and src.kind == "f":
        what = "value(s) that are not integers"

        def bad(chunk):
            return (chunk != np.round(chunk)) | (np.abs(chunk) >= 2.0**63)

    else:
        return None
    count, largest = 0, None
    for chunk in _chunks(X):
        hits = chunk[bad(chunk)]
        if hits.size:
            count += int(hits.size)
            top = hits[np.argmax(np.abs(hits.astype(np.float64)))].item()
            if largest is None or abs(float(top)) > abs(float(largest)):
                largest = top
    return (count, largest, what) if count else None


def check_lossless(X, dtype, what="X"):
    """Raise a ValueError if converting ``X`` to ``dtype`` would change values.

    Integers of magnitude above ``2**24`` to float32 (``2**53`` to float64),
    floats beyond the target's range, non-integers to int64 indices: each is
    named with how many values it hits and the largest.
    """
    changed = _changed_values(X, dtype)
    if changed is None:
        return
    count, largest, kind = changed
    src, dst = np.dtype(X.dtype), np.dtype(dtype)
    if dst.kind == "i":
        msg = (
            f"The network takes {what} as {dst.name} indices (it holds an "
            f"nn.Embedding or nn.EmbeddingBag and was fitted on integer samples), "
            f"but {what} ({src.name}) holds {count} {kind} (e.g. {largest!r}). "
            "Pass integer indices."
        )
    elif src.kind == "f":
        msg = (
            f"{what} ({src.name}) holds {count} {kind} (largest magnitude "
            f"{largest!r}); the network's weights are {dst.name}, and converted, "
            f"these values would become infinite. Rescale {what}, or use a "
            "network in float64 (module.double())."
        )
    else:
        msg = (
            f"{what} ({src.name}) holds {count} {kind} (largest magnitude "
            f"{largest!r}), which {dst.name}, the dtype of the network's weights, "
            f"cannot all represent exactly: converting {what} would change them. "
            f"Convert {what} yourself to accept the rounding (e.g. "
            f"{what}.astype(np.{dst.name})), rescale those columns, or use a "
            "network in float64 (module.double()); integer ids are taken as "
            "int64 by a network with an nn.Embedding."
        )
    raise ValueError(msg)


def as_input(X, dtype, what="X"):
    """Return ``X`` in ``dtype``, the network's input dtype, refusing lossy casts.

    An array in memory or a sparse matrix is converted once (no copy when it
    has that dtype already); a :class:`numpy.memmap` is only checked, and
    converted a batch at a time when read (``StreamedArray``).
    """
    dtype = np.dtype(dtype)
    if X.dtype == dtype:
        return X
    check_lossless(X, dtype, what)
    if isinstance(X, np.memmap):
        return X
    return X.astype(dtype)


def rows_as_input(rows, dtype):
    """Return a few rows in ``dtype`` without the check (the whole X is checked)."""
    rows = rows.toarray() if sparse.issparse(rows) else np.asarray(rows)
    return rows.astype(dtype, copy=False)


def source_feature_names(X):
    """Return the column names of source data ``X`` (an ndarray), or None."""
    if isinstance(X, (Dataset, np.memmap)):
        return None
    return _get_feature_names(X)


def _listed(names, limit=5):
    names = [str(name) for name in names]
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_feature_names(estimator, record):
    """Compare the feature names seen by ``fit`` with those of ``fit_source``.

    As scikit-learn compares them between ``fit`` and ``predict``: the same
    names in another order and other names are a ValueError; a target without
    names for weights pretrained with them gives scikit-learn's UserWarning.
    Nothing to compare without a record or with a record that holds no names
    (unnamed source columns, a state dict, a module).
    """
    source = None if record is None else record.feature_names
    target = getattr(estimator, "feature_names_in_", None)
    name = type(estimator).__name__
    if source is None:
        # Weights from an unnamed source, a state dict, a module or an older
        # file: nothing says which column each input unit stands for.
        return
    if target is None:
        msg = (
            f"X does not have valid feature names, but {name} was pretrained with "
            "feature names"
        )
        warn_at_user(msg, UserWarning)
        return
    if len(source) == len(target) and np.all(source == target):
        return
    unexpected = [col for col in target if col not in set(source)]
    missing = [col for col in source if col not in set(target)]
    if not unexpected and not missing:
        msg = (
            f"The target's columns are the source's in another order: fit got "
            f"[{_listed(target, 10)}] but fit_source saw [{_listed(source, 10)}]. "
            "The network's input units follow the source's order; select the "
            "columns in that order, e.g. X[clf.source_feature_names_in_]."
        )
        raise ValueError(msg)
    msg = (
        "The target's feature names differ from those seen by fit_source: "
        + (f"unseen at fit_source: {_listed(unexpected)}; " if unexpected else "")
        + (f"seen at fit_source, now missing: {_listed(missing)}; " if missing else "")
        + "each input unit of the pretrained network stands for one source column, "
        "so the target needs the same columns in the same order."
    )
    raise ValueError(msg)


def refuse_dataset(X, y):
    """Raise a TypeError when ``fit`` gets a torch ``Dataset`` instead of arrays."""
    if isinstance(X, Dataset):
        msg = (
            f"fit takes arrays X and y; got a {type(X).__name__} (a torch Dataset"
            f"{'' if y is None else ' and y'}). Pass the target samples and labels "
            "as arrays, e.g. fit(X, y). Datasets are accepted by fit_source, for "
            "source data too big for memory."
        )
        raise TypeError(msg)


def check_source_params(source_params):
    """Refuse ``source_params`` keys written as the estimator's ``net__`` names."""
    nested = sorted(key for key in source_params or {} if key.startswith("net__"))
    if nested:
        fixed = {key[len("net__") :]: source_params[key] for key in nested}
        msg = (
            f"Invalid source_params {source_params!r}: {', '.join(nested)} "
            "carry the estimator's 'net__' prefix, but source_params keys are the "
            f"net's own parameter names; drop the prefix: {fixed!r}."
        )
        raise ValueError(msg)


@contextmanager
def naming_sample_shapes(record, X):
    """Add both sample shapes to a ValueError the network raises on ``X``.

    The weights decide whether a network runs on the target's samples (a CNN
    with global pooling runs at any resolution; an MLP whose input size follows
    the data does not), whichever route brought them.
    """
    try:
        yield
    except ValueError as exc:
        source = None if record is None else record.sample_shape
        target = tuple(X.shape[1:])
        if source is None or tuple(source) == target:
            raise
        msg = (
            f"The target samples have shape {target} but the weights were "
            f"pretrained on samples of shape {tuple(source)}, and the network "
            f"built for the target's samples does not take them: {exc}"
        )
        raise ValueError(msg) from exc


def clear_fitted(estimator):
    """Remove every attribute set by ``fit``: the estimator is not fitted after."""
    for key in list(vars(estimator)):
        public_fitted = key.endswith("_") and not key.startswith("_")
        if public_fitted or key in _PRIVATE_FITTED:
            delattr(estimator, key)


def validated_rows(estimator, X):
    """Check ``X`` for a fitted ``estimator``'s prediction or transform; return it.

    scikit-learn's checks against what ``fit`` saw (``validate_data`` with
    ``reset=False``: the number of features and their names), then the shape
    of each sample, which ``fit`` kept as ``_sample_shape``; ``X`` is returned
    in the dtype ``fit`` gave the network (``_input_dtype``, see
    :func:`as_input`).
    """
    check_is_fitted(estimator)
    X = validate_data(estimator, X, reset=False, **_CHECK_X)
    if tuple(X.shape[1:]) != estimator._sample_shape:
        msg = (
            f"X has samples of shape {tuple(X.shape[1:])}, but "
            f"{type(estimator).__name__} was fitted on samples of shape "
            f"{estimator._sample_shape}."
        )
        raise ValueError(msg)
    # The dtype fit gave the network (older pickles: float32, as then).
    dtype = getattr(estimator, "_input_dtype", np.dtype(np.float32))
    return _writable(as_input(X, dtype))
