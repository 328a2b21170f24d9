"""The record of pretrained (source) weights that estimators and their clones share."""

from __future__ import annotations

import copy
import dataclasses
import sys

import numpy as np
import torch


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class _Pretrained:
    """What ``fit_source`` learnt: prior knowledge for ``fit``, never changed by it.

    ``state_dict`` holds CPU tensors. Clones share one record, so that a grid
    search holds the weights once.

    A pickle of the record carries the weights, except in one case: pickled by
    a Dask client for a task after ``_dask.ship`` sent the weights to that
    client's cluster, it carries a reference to them (see ``_dask.py``).
    Records compare by identity.
    """

    state_dict: dict[str, torch.Tensor]
    sample_shape: tuple[int, ...] | None
    n_outputs: int | None
    classes: np.ndarray | None
    history: list
    # The source's column names (None: unnamed columns or unknown). A new field
    # also goes into _dask (reference, _Remote), _io (save, read) and
    # _source._read_source.
    feature_names: np.ndarray | None = None

    def __reduce__(self):
        shipping = sys.modules.get(f"{__package__}._dask")  # imported by a shipment
        reference = None if shipping is None else shipping.reference(self)
        if reference is not None:
            return reference
        return _Pretrained, self._fields()

    def __copy__(self):
        return _Pretrained(*self._fields())

    def __deepcopy__(self, memo):
        return _Pretrained(*copy.deepcopy(self._fields(), memo))

    def __repr__(self):
        return (
            f"{type(self).__name__}(<{len(self.state_dict)} tensors>, "
            f"sample_shape={self.sample_shape!r}, n_outputs={self.n_outputs!r})"
        )

    def _fields(self):
        """Return the constructor's arguments, in order."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(_Pretrained))
