"""
Regression targets on any scale: the default TransferRegressor on diabetes
==========================================================================

scikit-learn's diabetes data set has 442 patients, 10 standardised features
and a target between 25 and 346 (disease progression after one year). A
network trained with ``MSELoss`` on such targets starts far from them, and
within its epochs ends far worse than a linear model. ``TransferRegressor``
standardises the targets by default (``normalize_y="auto"``: for its
``MSELoss`` on the default network's linear output) and maps its predictions
back. This example cross-validates (5 shuffled folds, R²)
``Ridge``, the default ``TransferRegressor()`` and the same with
``normalize_y=False``, printing each model's folds as they finish::

    python examples/diabetes.py

See :doc:`/user_guide/targets` for ``normalize_y``.
"""

# %%

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score

from sktransfer import TransferRegressor

# %%
# Cross-validate the three models
# -------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Regression targets on any scale: the default TransferRegressor on diabetes"
        )
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # A tiny network: more torch threads only wait for each other, and far
    # longer on a busy machine (see the documentation's Common pitfalls).
    torch.set_num_threads(1)
    # The default network often runs all its epochs here (the training loss
    # still improves a little): right to warn about, noise in this table.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load_diabetes(return_X_y=True)
    print(f"diabetes: {len(X)} samples, targets {y.min():.0f} to {y.max():.0f}")
    models = {
        "Ridge()": Ridge(),
        "TransferRegressor()": TransferRegressor(
            max_epochs=args.max_epochs, random_state=args.seed
        ),
        "TransferRegressor(normalize_y=False)": TransferRegressor(
            normalize_y=False, max_epochs=args.max_epochs, random_state=args.seed
        ),
    }
    cv = KFold(5, shuffle=True, random_state=args.seed)
    results = {}
    for name, model in models.items():
        start = time.perf_counter()
        # verbose=2: scikit-learn prints each fold's score as it finishes.
        scores = cross_val_score(model, X, y, cv=cv, verbose=2)
        results[name] = scores
        print(
            f"{name}: R² {scores.mean():.3f} ± {scores.std():.3f} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    ridge = results["Ridge()"].mean()
    print()
    print(f"{'model':<38} {'R² mean':>8} {'vs Ridge':>9}")
    for name, scores in results.items():
        print(f"{name:<38} {scores.mean():>8.3f} {scores.mean() - ridge:>+9.3f}")
    return {name: float(np.mean(scores)) for name, scores in results.items()}


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
