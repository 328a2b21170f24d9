"""
Compare fine-tuning methods against training from scratch, under one CV
=======================================================================

Source task: scikit-learn's 8x8 digits 0-4 (901 labelled images). Target task:
digits 5-9 with few labelled images per class (10 by default, 50 in all). The
small CNN of the quickstart is pretrained once on the source; then, on the same
5 cross-validation splits of the target, :func:`sktransfer.compare_transfer`
fits

- ``scratch``: the same network from fresh weights, nothing frozen;
- ``transfer``: full fine-tuning from the source weights (the estimator's own
  settings);
- ``frozen``: the convolutional features frozen, only the head trains (the
  frozen stage is computed once per fit, see ``cache_frozen``);
- ``L2-SP``: full fine-tuning pulled toward the source weights;
- ``discriminative LR``: the features train with 0.3 times the head's rate;
- ``gradual unfreezing``: the head alone first, the second conv block from
  epoch 4, everything from epoch 8.

It prints the table (mean accuracy ± std over the folds, the difference to
scratch and the verdict) and saves the per-fold plot. Offline, about 15 seconds
on 2 CPU cores (matplotlib is needed for the plot: ``pip install
".[plot]"`` from the clone)::

    python examples/compare_methods.py
    python examples/compare_methods.py --labels-per-class 5 --output cmp.png

Without ``--output`` the plot is shown, not saved. See
:doc:`/user_guide/fine_tuning`.
"""

# %%

import argparse

import torch
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier, compare_transfer
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


# %%
# The settings compared with scratch and full fine-tuning
# --------------------------------------------------------

SETTINGS = {
    "frozen": {"frozen": "features.*"},
    "L2-SP": {"l2sp": 0.1},
    "discriminative LR": {"shared_lr_scale": 0.3},
    "gradual unfreezing": {
        "frozen": "features.*",
        "unfreeze": ((4, ("features.3.*", "features.4.*")), (8, "features.*")),
    },
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Compare fine-tuning methods against training from scratch, under one CV"
        )
    )
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        default=None,
        help="where to save the plot (default: not saved)",
    )
    args = parser.parse_args(argv)
    # A tiny network: more torch threads only wait for each other, and far
    # longer on a busy machine (see the documentation's Common pitfalls).
    torch.set_num_threads(1)

    data = make_digits_transfer(
        args.labels_per_class, random_state=args.seed, images=True
    )
    net = NeuralNetClassifier(
        SmallCNN,  # n_outputs is filled per task: 5 source and 5 target classes
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=args.epochs,
        batch_size=16,
        train_split=None,
        iterator_train__shuffle=True,
    )
    clf = TransferClassifier(
        net,
        head="head",
        source_params={"max_epochs": args.source_epochs, "batch_size": 64},
        random_state=args.seed,
    ).fit_source(data.X_source, data.y_source)

    comparison = compare_transfer(
        clf,
        data.X_target,
        data.y_target,
        cv=args.folds,
        settings=SETTINGS,
        random_state=args.seed,
        verbose=1,  # a line per setting and per fold as each finishes
    )
    print(
        f"Digits 0-4 -> 5-9, {args.labels_per_class} labels per class, "
        f"{args.folds}-fold CV, {args.epochs} fine-tuning epochs:"
    )
    print(comparison)
    try:
        ax = comparison.plot()
    except ImportError as exc:
        print(f"No plot: {exc}")
    else:
        ax.figure.tight_layout()  # room for the rotated setting names
        if args.output:
            ax.figure.savefig(args.output, dpi=120, bbox_inches="tight")
            print(f"Plot saved to {args.output}")
    return comparison


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
