"""Regression targets on any scale: ``normalize_y`` of :class:`TransferRegressor`.

A network trained with ``MSELoss`` from small initial weights fits targets of
unit scale; targets in the hundreds (diabetes: 25 to 346) leave Adam far from
a fit after the default epochs. As ``GaussianProcessRegressor(normalize_y=True)``
does, each task's targets are standardised with that task's own mean and
standard deviation (per target, computed in float64) before they reach the
loss, and predictions are mapped back. Pretraining uses the source's
statistics and fine-tuning the target's; only the target's are kept, as
``fit`` needs them for ``predict``. A target without spread gets scale 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def statistics(y2d, normalize):
    """Return the mean and scale that standardise each column of ``y2d``.

    Both are float64 arrays of shape (n_outputs,); the identity (0 and 1)
    when ``normalize`` is false.
    """
    n_outputs = y2d.shape[1]
    if not normalize:
        return np.zeros(n_outputs), np.ones(n_outputs)
    y = np.asarray(y2d, dtype=np.float64)
    mean, scale = y.mean(axis=0), y.std(axis=0)
    # As scikit-learn's _handle_zeros_in_scale: no spread, no scaling.
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1, np.abs(mean))] = 1.0
    return mean, scale


def standardize(y2d, mean, scale):
    """Return ``(y2d - mean) / scale`` as float32."""
    return ((np.asarray(y2d, dtype=np.float64) - mean) / scale).astype(np.float32)


def restore(y2d, mean, scale):
    """Return network outputs ``y2d`` mapped back to the targets' scale, float64."""
    return np.asarray(y2d, dtype=np.float64) * scale + mean


class ScaledTargets(Dataset):
    """A ``(sample, target)`` dataset whose targets are standardised on the fly.

    For a ``torch.utils.data.Dataset`` given to ``fit_source``: its samples
    pass through unchanged, its targets become ``(target - mean) / scale``.
    """

    def __init__(self, dataset, mean, scale):
        self.dataset = dataset
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample, target = self.dataset[index]
        target = torch.as_tensor(target, dtype=torch.float32)
        shape = target.shape
        scaled = (target.reshape(-1) - self.mean) / self.scale
        return sample, scaled.reshape(shape)
