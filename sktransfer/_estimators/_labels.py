"""The class labels of a classifier's targets, encoded for its loss."""

from __future__ import annotations

import numpy as np
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

from .._common import warn_at_user
from .._torch import _hf, _hf_files
from ._partial import encode_partial_classes


def encode_labels(estimator, y):
    """Encode labels as 0..n_classes-1; return them, the count and ``classes_``.

    A multilabel indicator matrix becomes float32 targets, one column per
    label, for ``BCEWithLogitsLoss``; ``estimator._multilabel_y`` (present
    only then) tells the network about to be built.

    Raises
    ------
    ValueError
        With fewer than 2 classes, or a 2-D ``y`` that is not a 0/1 indicator.
    """
    check_classification_targets(y)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)  # with scikit-learn's warning
    if y.ndim == 2:
        return _encode_multilabel(estimator, y)
    estimator.__dict__.pop("_multilabel_y", None)
    partial = getattr(estimator, "_partial", None)
    if partial is not None:
        return encode_partial_classes(estimator, y, partial["classes"])
    classes, encoded = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        msg = (
            f"{type(estimator).__name__} needs at least 2 classes in y; got 1 "
            f"class: {classes!r}."
        )
        raise ValueError(msg)
    return encoded.astype(np.int64), len(classes), {"classes_": classes}


def _encode_multilabel(estimator, y):
    """Return an indicator ``y`` as float32, its width and ``classes_``."""
    owner = type(estimator).__name__
    kind = type_of_target(y)
    if kind != "multilabel-indicator":
        msg = (
            f"{owner} takes y of shape (n_samples,) or a multilabel indicator "
            "matrix of shape (n_samples, n_labels) holding 0 and 1; got a 2-D y "
            f"of shape {y.shape} and type {kind!r} (multiclass-multioutput is "
            "not supported)."
        )
        raise ValueError(msg)
    if getattr(estimator, "_partial", None) is not None:
        msg = (
            f"{owner}.partial_fit takes a y of class labels; a multilabel y "
            "trains with fit."
        )
        raise ValueError(msg)
    y = y.toarray() if hasattr(y, "toarray") else y
    values = np.unique(y)
    if not np.isin(values, (0, 1)).all():
        msg = (
            f"A multilabel y holds 0 and 1 (a label is absent or present); got "
            f"the values {values!r}."
        )
        raise ValueError(msg)
    estimator._multilabel_y = True  # for the network about to be built
    # As MLPClassifier: the labels are the columns 0..n_labels-1.
    return y.astype(np.float32), y.shape[1], {"classes_": np.arange(y.shape[1])}


def check_kept_head(estimator, pretrained, classes):
    """Warn when a kept pretrained head maps shared labels to other classes.

    With ``head=None`` every weight is transferred, the head's included, so
    the source's output ``i`` becomes the target's ``i``-th class (sorted):
    a label that both tasks have, at different positions, would silently be
    predicted as another class. The source's labels are those of
    ``fit_source``, or a Hugging Face classifier's ``config.id2label``.
    """
    if estimator.head or not estimator.pretrained or classes is None:
        return
    source = None if pretrained is None else pretrained.classes
    spec = _hf.as_spec(estimator.net)
    if source is None and spec is not None and not spec.tokenizer:
        # A Hugging Face classifier's outputs carry names (config.id2label).
        names = _hf_files.output_labels(spec.model)
        source = None if names is None else np.asarray(names, dtype=object)
    if source is None or len(source) != len(classes):
        return  # (unknown, or refused with the widths named)
    targets = classes.tolist()
    if pretrained is None or pretrained.classes is None:
        # config.json names are strings: "1" is the target's label 1.
        targets = [str(label) for label in targets]
    moved = [
        (label, s, targets[s])
        for s, label in enumerate(source.tolist())
        if label in targets and targets[s] != label
    ]
    if not moved:
        return
    pairs = "; ".join(
        f"the output that predicted {label!r} now predicts {now!r}"
        for label, _, now in moved
    )
    msg = (
        f"head=None keeps the pretrained head, whose outputs map to the target's "
        f"classes by position (the target's sorted): source {source.tolist()!r} become "
        f"target {targets!r}, so labels of both tasks change outputs: {pairs}. "
        "Label the target's classes as the source does, or name the head "
        "(head='auto' or a submodule) to rebuild it for the target."
    )
    warn_at_user(msg)
