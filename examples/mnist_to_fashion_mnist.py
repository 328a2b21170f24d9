"""
Transfer a small convolutional network from MNIST to Fashion-MNIST
==================================================================

A network is pretrained on the 60,000 labelled MNIST digits (the source task),
then fine-tuned on a handful of labelled Fashion-MNIST images per class (the
target task): its convolutional ``features`` are kept frozen and only a new
``head`` is trained. The same network trained from scratch on the same few
images is the baseline. Both are scored on the 10,000 Fashion-MNIST test
images.

The first run downloads both data sets (about 60 MB) into the scikit-learn data
folder, or into ``--data-home``. Run ``python examples/mnist_to_fashion_mnist.py
--help`` for the options.

This example is shown but not run when the documentation is built: it
downloads its data (``tests/test_examples.py`` runs it on a small fake
mirror). Its network trains on 60,000 images, enough work for every core:
it keeps torch's default of one thread per core. On a machine shared with
other jobs, set ``OMP_NUM_THREADS`` lower (see :doc:`/pitfalls`).
"""

# %%

from __future__ import annotations

import argparse

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier
from sktransfer.datasets import fetch_mnist

# %%
# The network
# -----------


class ConvNet(nn.Module):
    """Two convolutional blocks (``features``) and a two-layer ``head``.

    Parameters
    ----------
    n_outputs : int, default=10
        Number of classes; the estimator sets it for each task.
    """

    def __init__(self, n_outputs: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14 -> 7x7
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, n_outputs),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return the logits of a batch of images of shape (n, 1, 28, 28)."""
        return self.head(self.features(X))


def to_images(X: np.ndarray) -> np.ndarray:
    """Scale uint8 images of shape (n, 28, 28) to float32 (n, 1, 28, 28) in [0, 1]."""
    return X[:, np.newaxis].astype(np.float32) / 255


def sample_per_class(y: np.ndarray, n_per_class: int, random_state: int) -> np.ndarray:
    """Return the sorted indices of ``n_per_class`` random samples of each class."""
    rng = np.random.default_rng(random_state)
    indices = [
        rng.choice(np.flatnonzero(y == label), size=n_per_class, replace=False)
        for label in np.unique(y)
    ]
    return np.sort(np.concatenate(indices))


def load_data(
    labels_per_class: int, random_state: int, data_home: str | None = None
) -> dict[str, np.ndarray]:
    """Load MNIST as the source and a few labelled Fashion-MNIST images as target."""
    X_mnist, y_mnist = fetch_mnist("mnist", subset="train", data_home=data_home)
    X_fashion, y_fashion = fetch_mnist(
        "fashion_mnist", subset="train", data_home=data_home
    )
    X_test, y_test = fetch_mnist("fashion_mnist", subset="test", data_home=data_home)
    small = sample_per_class(y_fashion, labels_per_class, random_state)
    return {
        "X_source": to_images(X_mnist),
        "y_source": y_mnist,
        "X_target": to_images(X_fashion[small]),
        "y_target": y_fashion[small],
        "X_test": to_images(X_test),
        "y_test": y_test,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Transfer a small convolutional network from MNIST to Fashion-MNIST"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--labels-per-class",
        type=int,
        default=10,
        help="labelled Fashion-MNIST training images per class",
    )
    parser.add_argument(
        "--data-home",
        default=None,
        help="cache folder of the data sets; None is scikit-learn's data home",
    )
    parser.add_argument(
        "--max-epochs-source",
        type=int,
        default=3,
        help="epochs of pretraining on MNIST",
    )
    parser.add_argument(
        "--max-epochs-target",
        type=int,
        default=30,
        help="epochs of training on the few Fashion-MNIST images",
    )
    parser.add_argument(
        "--random-state",
        type=int,
        default=0,
        help="seed of the sampled training images and of the networks",
    )
    return parser.parse_args(argv)


# %%
# Pretrain on MNIST, fine-tune on Fashion-MNIST
# ---------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_data(args.labels_per_class, args.random_state, args.data_home)
    print(
        f"source: {len(data['y_source'])} MNIST images; "
        f"target: {len(data['y_target'])} Fashion-MNIST images for training, "
        f"{len(data['y_test'])} for testing"
    )

    net = NeuralNetClassifier(
        ConvNet,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=args.max_epochs_target,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
    )

    # Pretrain on MNIST, then fine-tune a new head on the few Fashion-MNIST
    # images while the convolutional features stay frozen.
    transfer = TransferClassifier(
        net,
        head="head",
        frozen="features.*",
        source_params={"max_epochs": args.max_epochs_source, "batch_size": 128},
        random_state=args.random_state,
        verbose=1,
    )
    transfer.fit_source(data["X_source"], data["y_source"])
    transfer.fit(data["X_target"], data["y_target"])

    # The baseline: no fit_source, so the whole network trains from scratch.
    scratch = TransferClassifier(
        net, head="head", frozen=(), random_state=args.random_state
    )
    scratch.fit(data["X_target"], data["y_target"])

    transfer_accuracy = transfer.score(data["X_test"], data["y_test"])
    scratch_accuracy = scratch.score(data["X_test"], data["y_test"])
    print(f"Fashion-MNIST test accuracy, pretrained on MNIST: {transfer_accuracy:.3f}")
    print(f"Fashion-MNIST test accuracy, from scratch:        {scratch_accuracy:.3f}")
    print(f"Gain from transfer: {transfer_accuracy - scratch_accuracy:+.3f}")


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
