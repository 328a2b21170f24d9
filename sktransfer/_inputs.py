"""Source and target agree on their inputs: checks between ``fit_source`` and ``fit``.

Pure checks over the pretrained record and the target's data, called by the
estimators: the target's feature names against those seen by ``fit_source``
(as scikit-learn checks them between ``fit`` and ``predict``), the kind of
data ``fit`` takes, the keys of ``source_params``, what a failing network says
about the sample shapes, and the fitted state that ``fit_source`` clears.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.utils.data import Dataset

from ._common import _CHECK_X, _writable
from ._compat import _get_feature_names

# Private fitted attributes of ``fit`` (the public ones end in "_").
_PRIVATE_FITTED = (
    "_sample_shape",
    "_y_ndim",
    "_y_mean",
    "_y_scale",
    "_predict_stage",
)


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
        warnings.warn(msg, UserWarning, stacklevel=4)
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
    of each sample, which ``fit`` kept as ``_sample_shape``.
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
    return _writable(X)
