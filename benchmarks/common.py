"""What every benchmark shares: sizes, networks, data, timing and table rows."""

from __future__ import annotations

import functools
import operator
import statistics
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.ndimage
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import MLP

# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Sizes:
    """Every size the benchmarks use; ``--quick`` shrinks them all.

    Attributes
    ----------
    finetune_samples, finetune_epochs, finetune_reps : int
        Fine-tuning loop (MLP 784-256-128-10): target samples, epochs,
        repetitions.
    finetune_source : int
        Source samples for its one pretraining epoch.
    frozen_source, frozen_source_epochs : int
        Pretraining of the CNN: source samples (digits 0-4) and epochs.
    frozen_samples, frozen_test, frozen_epochs, frozen_reps : int
        Fine-tuning the CNN with frozen features: target training samples
        (digits 5-9), test samples, epochs, repetitions.
    grid_source_epochs, grid_epochs, grid_reps : int
        Grid search (MLP on 8x8 digits): pretraining epochs, fine-tuning
        epochs, repetitions.
    reuse_samples, reuse_epochs, reuse_reps : int
        Frozen outputs shared by a search's fits (the CNN, frozen features):
        target samples, fine-tuning epochs, repetitions.
    memory_reps : int
        Peak-memory measurements of each kind of fine-tuning.
    predict_rows, predict_reps : int
        Rows to predict and repetitions.
    """

    finetune_samples: int = 8_000
    finetune_epochs: int = 2
    finetune_reps: int = 5
    finetune_source: int = 5_000
    frozen_source: int = 2_000
    frozen_source_epochs: int = 2
    frozen_samples: int = 2_000
    frozen_test: int = 1_000
    frozen_epochs: int = 5
    frozen_reps: int = 3
    grid_source_epochs: int = 10
    grid_epochs: int = 5
    grid_reps: int = 3
    reuse_samples: int = 1_200
    reuse_epochs: int = 3
    reuse_reps: int = 2
    memory_reps: int = 3
    predict_rows: int = 100_000
    predict_reps: int = 3


FULL = Sizes()
QUICK = replace(
    FULL,
    finetune_samples=600,
    finetune_epochs=1,
    finetune_reps=1,
    finetune_source=200,
    frozen_source=300,
    frozen_source_epochs=1,
    frozen_samples=256,
    frozen_test=128,
    frozen_epochs=2,
    frozen_reps=1,
    grid_source_epochs=1,
    grid_epochs=1,
    grid_reps=1,
    reuse_samples=100,
    reuse_epochs=1,
    reuse_reps=1,
    memory_reps=1,
    predict_rows=5_000,
    predict_reps=1,
)

# The grid of the search benchmarks: 4 candidates, 3 folds, plus the refit.
GRID_LR = (3e-4, 1e-3, 3e-3, 1e-2)
GRID_CV = 3
GRID_FITS = len(GRID_LR) * GRID_CV + 1

# A goal is "<op> <value>"; the ops a goal may use.
_OPS = {
    "≤": operator.le,
    "<": operator.lt,
    "≥": operator.ge,
    ">": operator.gt,
    "=": operator.eq,
}

# ---------------------------------------------------------------- networks


class SmallCNN(nn.Module):
    """A small CNN for 28x28 single-channel images: conv ``features``, MLP ``head``.

    Parameters
    ----------
    n_outputs : int, default=10
        Number of classes; the estimators fill it in for each task.
    """

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(64 * 14 * 14, 64), nn.ReLU(), nn.Linear(64, n_outputs)
        )

    def forward(self, X):
        """Return the logits of a batch of (n, 1, 28, 28) images."""
        return self.head(self.features(X))


def _classifier_net(module, **params):
    """Return a skorch classifier with the settings every benchmark shares."""
    settings = {
        "criterion": nn.CrossEntropyLoss,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "train_split": None,
        "iterator_train__shuffle": True,
        "verbose": 0,
    }
    settings.update(params)
    return NeuralNetClassifier(module, **settings)


def _mlp_net(batch_size, max_epochs, **params):
    """Return the MLP 784-256-128-10 net of the fine-tuning and predict benchmarks."""
    return _classifier_net(
        MLP,
        module__hidden_layer_sizes=(256, 128),
        batch_size=batch_size,
        max_epochs=max_epochs,
        **params,
    )


# -------------------------------------------------------------------- data


@functools.cache
def _digit_images():
    """Return the 1,797 digits upsampled to 28x28 in [0, 1], and their labels."""
    digits = load_digits()
    # 8 -> 28 pixels by bilinear interpolation, which also smooths the blocks.
    images = scipy.ndimage.zoom(digits.images / 16.0, (1, 3.5, 3.5), order=1)
    return np.clip(images, 0.0, 1.0).astype(np.float32), digits.target


def _digit_split(part):
    """Return the images and labels of one part of the digits.

    ``"source"`` is digits 0-4, ``"target"`` and ``"test"`` the even and odd
    positions of digits 5-9, ``"all"`` every digit.
    """
    images, labels = _digit_images()
    if part == "all":
        return images, labels
    if part == "source":
        keep = labels < 5
    else:
        keep = np.flatnonzero(labels >= 5)[(part == "test") :: 2]
    return images[keep], labels[keep]


def mnist_like(part, n_samples, *, seed, flat=False):
    """Return ``n_samples`` MNIST-sized digits of one part, with seeded noise.

    Parameters
    ----------
    part : {"source", "target", "test", "all"}
        Which digits (see ``_digit_split``).
    n_samples : int
        Number of samples, drawn with replacement from the part's images.
    seed : int
        Seed of the draw and of the noise.
    flat : bool, default=False
        Return (n, 784) rows instead of (n, 1, 28, 28) images.

    Returns
    -------
    X : ndarray of float32 in [0, 1]
        The samples.
    y : ndarray of int64
        Their digits.
    """
    images, labels = _digit_split(part)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(images), size=n_samples)
    X = images[index]
    X += 0.05 * rng.standard_normal(X.shape, dtype=np.float32)
    np.clip(X, 0.0, 1.0, out=X)
    X = X.reshape(n_samples, -1) if flat else X[:, None]
    return X, labels[index].astype(np.int64)


# ---------------------------------------------------------------- measuring


def _rotated(names, rep):
    """``names`` starting at position ``rep``: who runs first changes each time."""
    shift = rep % len(names)
    return names[shift:] + names[:shift]


def _timed(fn, *, seed):
    """Seed torch and run ``fn()``; return (seconds, its result)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _median_ratio(numerators, denominators):
    """Return the median of the ratios of paired measurements."""
    return statistics.median(
        a / b for a, b in zip(numerators, denominators, strict=True)
    )


def _row(section, benchmark, sktransfer, baseline, ratio, goal, unit, **extra):
    """Return one row of the table; ``goal`` is like ``"≤ 1.10"`` or None.

    ``extra`` adds what a section reports beside the table, such as
    ``per_rep``: the measurements of each repetition (sktransfer's, the
    baseline's), in seconds or MiB.
    """
    met = None
    if goal is not None:
        op, value = goal.split()
        met = bool(_OPS[op](ratio, float(value)))
    return {
        "section": section,
        "benchmark": benchmark,
        "sktransfer": sktransfer,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        **extra,
    }


def _progress(message):
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


def _progress(message):
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)
