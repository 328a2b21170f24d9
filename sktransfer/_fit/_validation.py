"""Validation data given through the template gets the training data's encoding.

skorch makes its validation set with the net's ``train_split(dataset, y)``.
A split of the training data (skorch's ``ValidSplit``) is a ``Subset`` of the
dataset made from the encoded arrays, so it is encoded already. A validation
set from outside (``train_split=predefined_split(Dataset(X_val, y_val))``, as
skorch's transfer-learning tutorial does) is not: its labels reach the loss and
the scores as they are. While ``fit`` trains, :func:`encoded` wraps
``train_split`` so that such a set gets the same checks and encoding as
``fit``'s own ``X`` and ``y``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_array
from skorch.dataset import Dataset
from torch.utils.data import Subset, TensorDataset

from .._common import _CHECK_X, _writable, predict_batch_size
from ._inputs import as_input


@contextmanager
def encoded(net, X, fitted, n_outputs, stage=None, cache=None):
    """Encode an outside validation set of ``net`` like the training data, inside.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net about to train; its ``train_split`` is wrapped
        inside the block and restored after.
    X : ndarray of shape (n_samples, ...)
        The training samples, as checked by ``fit``, in the dtype the network
        takes (the validation samples are converted to it).
    fitted : dict
        The fitted label attributes (``classes_`` for a classifier).
    n_outputs : int
        The number of targets (regressor).
    stage : FrozenStage or None
        The cached frozen stage: the network then trains on its outputs, so
        the validation samples go through it too.
    cache : dict or None
        The frozen-stage report, with the device the cache is kept on.
    """
    original = net.train_split
    if not original:
        yield
        return

    def train_split(dataset, *args, **kwargs):
        train, valid = original(dataset, *args, **kwargs)
        if valid is None or valid is dataset:
            return train, valid
        if isinstance(valid, Subset) and valid.dataset is dataset:
            return train, valid  # a split of the encoded training data
        X_val, y_val = _check_valid(valid, X, fitted, n_outputs)
        if stage is not None:
            X_val = stage.transform(
                X_val,
                batch_size=predict_batch_size(net, len(X_val)),
                device=net.device,
                keep_on=(cache or {}).get("device", "cpu"),
            )
        return train, Dataset(X_val, y_val)

    net.train_split = train_split
    try:
        yield
    finally:
        net.train_split = original


def _arrays(valid):
    """Return the samples and targets of an outside validation set."""
    if type(valid) is Dataset:
        X_val, y_val = valid.X, valid.y
    elif type(valid) is TensorDataset and len(valid.tensors) == 2:
        X_val, y_val = valid.tensors
    else:
        msg = (
            f"The validation set given through train_split is a "
            f"{type(valid).__name__}; sktransfer gives an outside validation set "
            "the training data's label encoding and checks, which it can do for a "
            "skorch Dataset(X_val, y_val) of arrays or a TensorDataset(X_val, "
            "y_val). Pass train_split=predefined_split(Dataset(X_val, y_val))."
        )
        raise ValueError(msg)
    if y_val is None:
        msg = (
            "The validation set given through train_split has no targets (y is "
            "None); pass Dataset(X_val, y_val)."
        )
        raise ValueError(msg)
    if torch.is_tensor(X_val):
        X_val = X_val.detach().cpu().numpy()
    if torch.is_tensor(y_val):
        y_val = y_val.detach().cpu().numpy()
    return X_val, np.asarray(y_val)


def _check_valid(valid, X, fitted, n_outputs):
    """Check and encode an outside validation set as ``fit`` does its data."""
    X_val, y_val = _arrays(valid)
    X_val = check_array(X_val, **_CHECK_X, input_name="X_val")
    # The dtype the training samples reach the network in (``fit`` chose it).
    X_val = _writable(as_input(X_val, X.dtype, "X_val"))
    if X_val.shape[1:] != X.shape[1:]:
        msg = (
            f"The validation set given through train_split has samples of shape "
            f"{X_val.shape[1:]}, but the training samples have shape "
            f"{X.shape[1:]}."
        )
        raise ValueError(msg)
    if len(y_val) != len(X_val):
        msg = (
            f"The validation set given through train_split has {len(X_val)} "
            f"samples but {len(y_val)} targets."
        )
        raise ValueError(msg)
    classes = fitted.get("classes_")
    if classes is not None:
        return X_val, _encode_labels(y_val, classes)
    y_val = np.asarray(y_val, dtype=np.float32).reshape(len(y_val), -1)
    if y_val.shape[1] != n_outputs:
        msg = (
            f"The validation set given through train_split has {y_val.shape[1]} "
            f"targets per sample, but the training data has {n_outputs}."
        )
        raise ValueError(msg)
    if "_y_mean" in fitted:  # normalize_y: the training targets' scaling
        y_val = ((y_val - fitted["_y_mean"]) / fitted["_y_scale"]).astype(np.float32)
    return X_val, y_val


def _encode_labels(y_val, classes):
    """Return ``y_val`` as indices into ``classes``; unknown labels are an error."""
    y_val = np.asarray(y_val)
    if y_val.ndim == 2 and y_val.shape[1] == 1:
        y_val = y_val.ravel()
    if y_val.ndim != 1:
        msg = (
            f"The validation set given through train_split has labels of shape "
            f"{y_val.shape}; a classifier takes one label per sample."
        )
        raise ValueError(msg)
    index = {label: i for i, label in enumerate(classes.tolist())}
    labels = y_val.tolist()
    unknown = sorted({label for label in labels if label not in index}, key=str)
    if unknown:
        msg = (
            f"The validation set given through train_split has labels {unknown!r} "
            f"that are not among the classes of the training data, "
            f"{classes.tolist()!r}; the network has no output for them."
        )
        raise ValueError(msg)
    return np.asarray([index[label] for label in labels], dtype=np.int64)
