"""
A backbone trained by hand in PyTorch, saved, loaded, and tuned on a Dask cluster
=================================================================================

1. A small CNN is trained on scikit-learn's 8x8 digits 0-4 with a plain PyTorch
   loop: no sktransfer, no skorch, as a colleague's training script would.
2. Its weights are written to a safe weight file with ``save_source``.
3. Elsewhere, ``load_source`` reads the file, and ``GridSearchCV`` picks how to
   fine-tune it on digits 5-9 with 20 labels per class (frozen backbone or not,
   learning rate), its fits spread over a Dask cluster through joblib. The
   source weights travel to each worker once, not with every candidate.

Runs offline in under a minute on 2 CPU cores, on a ``LocalCluster`` of two
worker processes, from a clone of the repository::

    pip install ".[dask]"
    python examples/pretrained_backbone.py

On a real cluster, pass the scheduler's address instead; the workers need
sktransfer installed::

    python examples/pretrained_backbone.py --scheduler tcp://scheduler:8786

This example is shown but not run when the documentation is built: it needs
the optional Dask extra and starts a cluster (``tests/test_examples.py`` runs
it). See :doc:`/user_guide/weights` and :doc:`/user_guide/scaling`.
"""

# %%

import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier
from sktransfer.datasets import make_digits_transfer


class SmallCNN(nn.Module):
    """Two conv blocks (the shared ``features``) and a linear ``head``."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(32 * 2 * 2, n_outputs)

    def forward(self, X):
        """Return the logits of a batch of (n, 1, 8, 8) images."""
        return self.head(self.features(X))


# %%
# 1. A backbone trained by hand
# -----------------------------
# A plain PyTorch loop, as a colleague's training script would be.


def train_by_hand(X, y, epochs=15, seed=0):
    """Train a SmallCNN with a plain PyTorch loop, as a backbone from elsewhere."""
    torch.manual_seed(seed)
    model = SmallCNN(n_outputs=int(y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for batch in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(X[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model


# %%
# 2 and 3. Share the weights, load them, tune on Dask
# ----------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "A backbone trained by hand in PyTorch, saved, loaded,"
            " and tuned on a Dask cluster"
        )
    )
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    args = parser.parse_args(argv)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        msg = 'This example needs Dask: pip install ".[dask]" (from the clone)'
        raise SystemExit(msg) from exc

    # A tiny network, and each Dask worker is its own process: one torch thread
    # each, so that processes times threads stays within the cores.
    torch.set_num_threads(1)
    data = make_digits_transfer(20, random_state=0, images=True)

    # 1. Someone trains a backbone by hand on the source task.
    model = train_by_hand(data.X_source, data.y_source)

    net = NeuralNetClassifier(
        SmallCNN,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=15,
        batch_size=16,
        train_split=None,
        iterator_train__shuffle=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        # 2. ... and shares its weights as a file that is safe to open.
        path = Path(folder) / "digits-0-4.pt"
        TransferClassifier(net, head="head").load_source(model).save_source(path)
        print(f"saved the hand-trained backbone: {path.stat().st_size} bytes")

        # 3. Someone else loads it and tunes the fine-tuning on a Dask cluster.
        clf = TransferClassifier(net, head="head", random_state=0).load_source(path)
    grid = {"frozen": [(), "features.*"], "net__lr": [1e-3, 3e-3]}
    search = GridSearchCV(clf, grid, cv=3, n_jobs=-1, verbose=1)  # prints progress
    if args.scheduler:
        client = Client(args.scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    try:
        with joblib.parallel_backend("dask"):
            search.fit(data.X_target, data.y_target)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    print(f"{len(search.cv_results_['params'])} candidates x 3 folds on Dask")
    results = search.cv_results_
    for params, score in zip(
        results["params"], results["mean_test_score"], strict=True
    ):
        print(f"  {params}: mean CV accuracy {score:.3f}")
    print(f"best: {search.best_params_}")
    test = search.score(data.X_test, data.y_test)
    print(f"test accuracy of the best, refitted on all 100 labels: {test:.3f}")
    kept = all(
        torch.equal(value, search.best_estimator_.source_weights_[key])
        for key, value in model.state_dict().items()
    )
    print(f"best_estimator_ holds the hand-trained backbone's weights: {kept}")
    return search


# %%
# Run it
# ------

if __name__ == "__main__":
    main()
