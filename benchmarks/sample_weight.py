"""How far integer sample weights are from repeated samples, by batch size.

scikit-learn's check_sample_weight_equivalence_* demand that fitting with
integer weights equals fitting on the samples repeated. For mini-batch
training this holds only when all samples fit in one batch (up to float32
rounding); this script measures the gap in both regimes on digits.

    python benchmarks/sample_weight.py            # 600 samples, 20 epochs
    python benchmarks/sample_weight.py --quick    # 200 samples, 3 epochs
"""

import argparse
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import MLP, TransferClassifier


def main(argv=None):
    """Print the gap for one full batch and for batches of 32; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, epochs = (200, 3) if args.quick else (600, 20)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    X_fit, y_fit, X_test, y_test = X[:n], y[:n], X[n:], y[n:]
    counts = np.random.RandomState(0).randint(0, 3, size=n)
    rows = []
    for batch_size in (n * 3, 32):
        net = NeuralNetClassifier(
            MLP,
            criterion=nn.CrossEntropyLoss,
            max_epochs=epochs,
            lr=0.01,
            optimizer=torch.optim.Adam,
            batch_size=batch_size,
            train_split=None,
            iterator_train__shuffle=True,
        )
        weighted = TransferClassifier(net, random_state=0)
        weighted.fit(X_fit, y_fit, sample_weight=counts)
        repeated = TransferClassifier(net, random_state=0)
        repeated.fit(np.repeat(X_fit, counts, 0), np.repeat(y_fit, counts))
        gap = np.abs(weighted.predict_proba(X_test) - repeated.predict_proba(X_test))
        rows.append(
            {
                "batch_size": batch_size,
                "max_abs_proba_gap": float(gap.max()),
                "acc_weighted": weighted.score(X_test, y_test),
                "acc_repeated": repeated.score(X_test, y_test),
            }
        )
    print(
        "| batch size | max abs gap in predict_proba | accuracy weighted | repeated |"
    )
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['batch_size']} | {row['max_abs_proba_gap']:.2g} | "
            f"{row['acc_weighted']:.3f} | {row['acc_repeated']:.3f} |"
        )
    return rows


if __name__ == "__main__":
    main()
