"""
Quickstart: transfer a small CNN from digits 0-4 to digits 5-9
==============================================================

The source task is scikit-learn's 8x8 digits 0-4 (901 labelled images). The
target task is digits 5-9 with only 10 labelled images per class; the other
846 images of digits 5-9 are the test set. The same network is trained on the
target from scratch and fine-tuned from the source weights, for several
fine-tuning budgets, and each result is averaged over three draws of the 50
labelled images. Runs offline in under a minute on 2 CPU cores (13 s on a
quiet machine)::

    python examples/quickstart.py

The :doc:`quickstart page </quickstart>` explains each step.
"""

# %%

import time

import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier
from sktransfer.datasets import make_digits_transfer

# %%
# The network
# -----------
# Any ``torch.nn.Module`` whose shared layers and target-specific layers are
# submodules: here ``features`` and ``head``.


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


# %%
# Pretrain once, fine-tune many times
# -----------------------------------
# ``fit_source`` pretrains on digits 0-4; every clone fine-tunes from those
# weights. The baseline is the same network with no ``fit_source``.


def main():
    # A tiny network: more torch threads only wait for each other, and far
    # longer on a busy machine (see the documentation's Common pitfalls).
    torch.set_num_threads(1)
    net = NeuralNetClassifier(
        SmallCNN,  # n_outputs is filled per task: 5 source and 5 target classes
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=10,
        batch_size=16,
        train_split=None,
        iterator_train__shuffle=True,
    )
    data = make_digits_transfer(10, random_state=0, images=True)

    # Pretrain once on the source task; clones keep the pretrained weights.
    transfer = TransferClassifier(
        net,
        head="head",  # rebuilt for the target's classes
        frozen=(),  # fine-tune every shared layer
        source_params={"max_epochs": 10, "batch_size": 64},
        random_state=0,
    ).fit_source(data.X_source, data.y_source)
    frozen_block = clone(transfer).set_params(frozen=("features.0.*", "features.1.*"))
    scratch = TransferClassifier(net, head="head", random_state=0)  # no fit_source

    budgets = (5, 10, 20, 40)
    rows = {name: {b: [] for b in budgets} for name in ("scratch", "full", "frozen")}
    print("Pretrained on digits 0-4; fine-tuning 3 draws x 4 budgets x 3 models.")
    start = time.perf_counter()
    for draw in range(3):
        d = make_digits_transfer(10, random_state=draw, images=True)
        for epochs in budgets:
            for name, model in (
                ("scratch", scratch),
                ("full", transfer),
                ("frozen", frozen_block),
            ):
                model = clone(model).set_params(
                    net__max_epochs=epochs, random_state=draw
                )
                model.fit(d.X_target, d.y_target)
                rows[name][epochs].append(model.score(d.X_test, d.y_test))
        print(
            f"  draw {draw + 1}/3 done ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    n_test = len(data.X_test)
    print(f"Target: digits 5-9, 10 labelled images per class, {n_test} test images.")
    print("Test accuracy, mean of 3 draws of the labelled images:\n")
    print("fine-tuning epochs   scratch   transfer   transfer, first block frozen")
    for epochs in budgets:
        s, f, z = (np.mean(rows[name][epochs]) for name in rows)
        print(f"{epochs:>18}   {s:7.3f}   {f:8.3f}   {z:8.3f}")
    s, f = np.mean(rows["scratch"][10]), np.mean(rows["full"][10])
    print(
        f"\nAt 10 epochs: scratch {s:.3f}, transfer {f:.3f} "
        f"({100 * (f - s):+.1f} points)."
    )


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
