"""
Fine-tuning with augmentation, MixUp and test-time augmentation on few labels
=============================================================================

A small CNN is pretrained on scikit-learn's 8x8 digits 0-4 and fine-tuned on
digits 5-9 with 5 and with 10 labelled images per class (the rest of digits
5-9 is the test set), four ways: as is; with random affine augmentation of
every training batch (small rotations and shifts); with augmentation and
MixUp; and with augmentation and test-time augmentation (probabilities
averaged over the plain image and 8 augmented views). Each result is the mean
over draws of the labelled images. Offline; about 3 minutes (125 CPU-seconds)
on this project's shared 2-core machine::

    python examples/augmented_finetuning.py [--draws 3] [--epochs 30]

The augmentation is plain PyTorch (``affine_grid`` + ``grid_sample`` on the
whole batch); kornia's ``RandomAffine(degrees=10, translate=(0.125, 0.125),
resample="nearest")`` does the same (``pip install ".[augment]"`` from the
clone). See :doc:`/user_guide/augmentation`.
"""

# %%

import argparse
import math
import time

import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier
from sktransfer.datasets import make_digits_transfer


class SmallCNN(nn.Module):
    """Two conv blocks (the shared ``features``) and a linear ``head``."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(64 * 2 * 2, n_outputs)

    def forward(self, X):
        """Return the logits of a batch of (n, 1, 8, 8) images."""
        return self.head(self.features(X))


class RandomAffine:
    """Rotate each image by up to ``degrees`` and shift it by up to ``translate``.

    Works on a whole batch of shape (n, C, H, W) at once; ``translate`` is a
    fraction of the image's size. Draws from torch's random stream, which
    sktransfer seeds from ``random_state``.
    """

    def __init__(self, degrees=10.0, translate=0.125):
        self.degrees = degrees
        self.translate = translate

    def __call__(self, X):
        """Return an augmented copy of the batch ``X``."""
        n = len(X)
        angle = (torch.rand(n) * 2 - 1) * math.radians(self.degrees)
        shift = (torch.rand(n, 2) * 2 - 1) * 2 * self.translate  # grid units
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([cos, -sin, shift[:, 0]], dim=1),
                torch.stack([sin, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        ).to(X.dtype)
        grid = nn.functional.affine_grid(theta, list(X.shape), align_corners=False)
        # Nearest pixels: bilinear resampling would blur 8x8 digits, which the
        # test images are not.
        return nn.functional.grid_sample(X, grid, mode="nearest", align_corners=False)


def make_net(epochs):
    """Return the skorch template: SmallCNN, Adam, batches of 16."""
    return NeuralNetClassifier(
        SmallCNN,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=epochs,
        batch_size=16,
        train_split=None,
        iterator_train__shuffle=True,
    )


def settings(augment):
    """Return the compared settings: name -> estimator parameters."""
    return {
        "plain": {},
        "augment": {"augment": augment},
        "augment + MixUp": {"augment": augment, "mixup_alpha": 0.4},
        "augment + TTA (8 views)": {"augment": augment, "tta_views": 8},
    }


def pretrained(epochs, source_epochs=10, n_source=None):
    """Return a TransferClassifier pretrained on (the first n_source of) digits 0-4."""
    data = make_digits_transfer(10, random_state=0, images=True)
    return TransferClassifier(
        make_net(epochs),
        head="head",
        source_params={"max_epochs": source_epochs, "batch_size": 64},
        random_state=0,
    ).fit_source(data.X_source[:n_source], data.y_source[:n_source])


def run(labels=(5, 10), draws=3, epochs=30, names=None, base=None, n_test=None):
    """Return {(labels, name): [accuracy per draw]} and the seconds taken.

    ``base`` is a pretrained estimator (default: :func:`pretrained`);
    ``n_test`` scores only the first test images.
    """
    start = time.perf_counter()
    base = pretrained(epochs) if base is None else base
    chosen = settings(RandomAffine())
    if names is not None:
        chosen = {name: chosen[name] for name in names}
    scores = {}
    for n_labels in labels:
        for draw in range(draws):
            d = make_digits_transfer(n_labels, random_state=draw, images=True)
            fitted = {}
            for name, params in chosen.items():
                fit_params = {k: v for k, v in params.items() if k != "tta_views"}
                key = tuple(sorted(fit_params))
                if key not in fitted:  # TTA predicts with the augmented fit
                    model = clone(base).set_params(random_state=draw, **fit_params)
                    fitted[key] = model.fit(d.X_target, d.y_target)
                model = fitted[key].set_params(tta_views=params.get("tta_views", 0))
                score = model.score(d.X_test[:n_test], d.y_test[:n_test])
                scores.setdefault((n_labels, name), []).append(score)
    return scores, time.perf_counter() - start


def main(argv=None):
    """Print the table of the user guide's Augmentation page."""
    parser = argparse.ArgumentParser(
        description=(
            "Fine-tuning with augmentation, MixUp and test-time"
            " augmentation on few labels"
        )
    )
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    # A tiny network: more torch threads only wait for each other, and far
    # longer on a busy machine (see the documentation's Common pitfalls).
    torch.set_num_threads(1)
    labels = (5, 10)
    scores, seconds = run(labels, args.draws, args.epochs)
    names = list(settings(None))
    print(
        f"Digits 0-4 -> 5-9, {args.epochs} fine-tuning epochs, test accuracy, "
        f"mean of {args.draws} draws ({seconds:.0f} s):\n"
    )
    print("| setting | " + " | ".join(f"{n} labels/class" for n in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in names:
        cells = " | ".join(f"{np.mean(scores[(n, name)]):.3f}" for n in labels)
        print(f"| {name} | {cells} |")


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
