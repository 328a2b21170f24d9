"""Incremental fine-tuning: ``partial_fit``, one epoch over the data given.

``_PartialFit`` is a base of ``_BaseTransfer``, like ``_SourceTask``. Its
``partial_fit`` is ``fit`` with three differences, which ``_guard.training``
and the classifier's label encoding read from the ``_partial`` attribute set
for the duration of the call: one epoch (whatever ``max_epochs``), starting
from the current weights once fitted (from the pretrained ones at first), and,
for a classifier, the classes given on the first call rather than those found
in ``y``.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import validate_data

from .._common import _CHECK_X
from .._skorch import _text


class _PartialFit:
    """``partial_fit`` for the transfer estimators; a base of ``_BaseTransfer``."""

    def _partial_fit(self, X, y, classes=None, sample_weight=None):
        """Run ``fit`` for one epoch, continuing the last fit if there is one."""
        if hasattr(self, "net_"):
            # scikit-learn's message when the number of features changes.
            validate_data(
                self, _text.encode_inputs(self, X), reset=False, **_CHECK_X
            )  # texts: _text.py
        self._partial = {"classes": classes}
        try:
            return self.fit(X, y, sample_weight=sample_weight)
        finally:
            self.__dict__.pop("_partial", None)


def encode_partial_classes(estimator, y, classes):
    """Encode ``y`` by the classes of ``partial_fit``; return what ``_encode_y`` does.

    The classes are ``classes`` on the first call (required, as scikit-learn's
    ``partial_fit`` requires them) and ``classes_`` afterwards; ``classes``
    given again must be the same.
    """
    name = type(estimator).__name__
    known = getattr(estimator, "classes_", None) if hasattr(estimator, "net_") else None
    if classes is None and known is None:
        msg = (
            f"{name}.partial_fit needs classes on the first call: all the labels "
            "that y may hold over the calls, e.g. classes=np.unique(y_all)."
        )
        raise ValueError(msg)
    if classes is not None:
        classes = np.unique(np.asarray(classes))
        if known is not None and not np.array_equal(classes, known):
            msg = (
                f"classes={classes!r} is not the same as on the first call to "
                f"partial_fit, which gave {known!r}."
            )
            raise ValueError(msg)
    classes = known if classes is None else classes
    if len(classes) < 2:
        msg = f"{name} needs at least 2 classes; got classes={classes!r}."
        raise ValueError(msg)
    unknown = np.setdiff1d(y, classes)
    if len(unknown):
        msg = (
            f"y holds labels {unknown!r} that are not among the classes "
            f"{classes!r} given to the first call to partial_fit."
        )
        raise ValueError(msg)
    encoded = np.searchsorted(classes, y).astype(np.int64)
    return encoded, len(classes), {"classes_": classes}
