"""The record of pretrained (source) weights that estimators and their clones share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _Pretrained:
    """What ``fit_source`` learnt: prior knowledge for ``fit``, never changed by it.

    ``state_dict`` holds CPU tensors. Clones share one record, so that a grid
    search holds the weights once.
    """

    state_dict: dict[str, torch.Tensor]
    sample_shape: tuple[int, ...]
    n_outputs: int
    classes: np.ndarray | None
    history: list
