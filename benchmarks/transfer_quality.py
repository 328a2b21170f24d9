"""Transfer quality with few labels: every method side by side on four tasks.

Run from the repository root::

    python benchmarks/transfer_quality.py            # 4 tasks x 3 budgets x 5 seeds
    python benchmarks/transfer_quality.py --quick    # a smoke run, seconds
    python benchmarks/transfer_quality.py --seeds 2 --tasks digits,shift1d

Tasks (all generated offline):

- ``digits``: scikit-learn's 8x8 digits 0-4 (source) -> 5-9 (target), a CNN.
- ``shift1d``: a 1-D signal task in the spirit of MNIST-1D (Greydanus, 2020),
  generated here (the ``mnist1d`` package imports ``requests`` at import time
  and is not a dependency): ten smooth templates, randomly shifted, scaled and
  noised; the source uses shifts in [-8, 8] and little noise, the target
  shifts in [8, 20] with more noise and a linear trend (domain shift).
- ``tabular``: ``make_classification`` (4 classes) split by the sign of a
  feature: source and target are two halves of the input space.
- ``regression``: a smooth non-linear regression, source on x0 < 0, target on
  x0 >= 0; budgets are 25/50/100 samples, the score is R^2.

Methods: scratch (``pretrained=False``), full fine-tuning, frozen features
(new head), linear probe (:func:`~sktransfer.linear_probe`: standardised
:class:`~sktransfer.PretrainedFeatures`, then ``LogisticRegressionCV`` /
``RidgeCV`` choosing the L2 strength on the training labels), L2-SP,
discriminative rates (``shared_lr_scale=0.1``), layer decay
(``layer_decay=0.5``), head-then-all (frozen, ``unfreeze`` half way), and the
model that :func:`~sktransfer.make_transfer_search` selects among full
fine-tuning, frozen features, scratch and the linear probe (5-fold stratified
on the labelled samples, scored by log-loss / squared error). It prints one
markdown table (mean ± std of the test score over the seeds) and the issue's
goals, met or not.

``--ceiling`` measures instead what the digits CNN reaches from scratch with
*all* labelled digits 5-9 (5-fold cross-validation over the target pool).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedKFold,
)
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from sktransfer import (
    MLP,
    TransferClassifier,
    TransferRegressor,
    linear_probe,
    make_transfer_search,
)

METHODS = (
    "scratch",
    "full fine-tuning",
    "frozen features",
    "linear probe",
    "L2-SP",
    "discriminative",
    "layer decay",
    "head-then-all",
    "GridSearchCV",
)


class ConvNet(nn.Module):
    """Two conv blocks and a linear head, for 2-D images or 1-D signals."""

    def __init__(self, n_outputs=10, dim=2, channels=16, length=8):
        super().__init__()
        conv, bn, pool = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
            if dim == 2
            else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
        )
        self.features = nn.Sequential(
            conv(1, channels, 3, padding=1),
            bn(channels),
            nn.ReLU(),
            conv(channels, channels, 3, padding=1),
            bn(channels),
            nn.ReLU(),
            pool(2),
            nn.Flatten(),
        )
        n_flat = channels * (length // 2) ** dim
        self.head = nn.Linear(n_flat, n_outputs)

    def forward(self, X):
        """Return the logits."""
        return self.head(self.features(X))


# ------------------------------------------------------------------- tasks


def _digits(rng):
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    return X[y < 5], y[y < 5], X[y >= 5], y[y >= 5]


def _signals(rng, n, shifts, noise, trend):
    t = np.linspace(-1, 1, 40)
    templates = np.stack(
        [np.sin((k + 1) * np.pi * t) * np.exp(-k * t**2 / 4) for k in range(10)]
    )
    y = rng.randint(10, size=n)
    shift = rng.randint(shifts[0], shifts[1] + 1, size=n)
    X = np.stack([np.roll(templates[c], s) for c, s in zip(y, shift, strict=True)])
    X *= rng.uniform(0.7, 1.3, size=(n, 1))
    X += noise * rng.normal(size=X.shape) + trend * rng.normal(size=(n, 1)) * t
    return X[:, None, :].astype(np.float32), y


def _shift1d(rng):
    Xs, ys = _signals(rng, 4000, (-8, 8), 0.1, 0.0)
    Xt, yt = _signals(rng, 3000, (8, 20), 0.3, 0.5)
    return Xs, ys, Xt, yt


def _tabular(rng):
    X, y = make_classification(
        6000, 20, n_informative=10, n_classes=4, n_clusters_per_class=2, random_state=0
    )
    X = X.astype(np.float32)
    side = X[:, 0] > 0
    return X[~side], y[~side], X[side], y[side]


def _regression(rng):
    X = np.random.RandomState(0).uniform(-2, 2, size=(6000, 8)).astype(np.float32)
    y = (
        np.sin(X[:, 0] * X[:, 1]) + X[:, 2] ** 2 / 2 - np.cos(X[:, 3] + X[:, 0])
    ).astype(np.float32)
    side = X[:, 0] >= 0
    return X[~side], y[~side], X[side], y[side]


TASKS = {
    "digits": (_digits, "images", (5, 10, 20)),
    "shift1d": (_shift1d, "signals", (5, 10, 20)),
    "tabular": (_tabular, "mlp", (5, 10, 20)),
    "regression": (_regression, "regression", (25, 50, 100)),
}


def _estimator(kind, epochs, seed):
    common = {
        "optimizer": torch.optim.Adam,
        "lr": 3e-3,
        "max_epochs": epochs,
        "batch_size": 32,
        "train_split": None,
        "iterator_train__shuffle": True,
    }
    if kind == "regression":
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(64, 64), **common)
        return TransferRegressor(net, head="head", random_state=seed)
    if kind == "mlp":
        module, extra = MLP, {"module__hidden_layer_sizes": (64, 64)}
    elif kind == "images":
        module, extra = ConvNet, {"module__dim": 2, "module__length": 8}
    else:
        module, extra = ConvNet, {"module__dim": 1, "module__length": 40}
    net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, **common, **extra)
    return TransferClassifier(net, head="head", random_state=seed)


def _draw(rng, y, budget, regression):
    if regression:
        return rng.choice(len(y), budget, replace=False)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(y == c), budget, replace=False)
            for c in np.unique(y)
        ]
    )


def _methods(base, epochs, seed, cv_repeats=1):
    cv = 5
    if cv_repeats > 1:
        repeated = RepeatedStratifiedKFold if is_classifier(base) else RepeatedKFold
        cv = repeated(n_splits=5, n_repeats=cv_repeats, random_state=seed)
    return {
        "scratch": clone(base).set_params(pretrained=False),
        "full fine-tuning": clone(base).set_params(pretrained=True),
        "frozen features": clone(base).set_params(pretrained=True, frozen="features.*"),
        "linear probe": linear_probe(base),
        "L2-SP": clone(base).set_params(pretrained=True, l2sp=0.01),
        "discriminative": clone(base).set_params(pretrained=True, shared_lr_scale=0.1),
        "layer decay": clone(base).set_params(pretrained=True, layer_decay=0.5),
        "head-then-all": clone(base).set_params(
            pretrained=True,
            frozen="features.*",
            unfreeze=((max(2, epochs // 2), "features.*"),),
        ),
        "GridSearchCV": make_transfer_search(
            base, frozen=[(), "features.*"], cv=cv, random_state=seed
        ),
    }


def run(tasks, seeds, epochs, source_epochs, budgets=None, quick=False, cv_repeats=1):
    """Return ``{(task, budget): {method: [score per seed]}}``."""
    results = {}
    for task in tasks:
        make, kind, task_budgets = TASKS[task]
        rng = np.random.RandomState(0)
        Xs, ys, Xt, yt = make(rng)
        if quick:
            Xs, ys = Xs[:300], ys[:300]
        regression = kind == "regression"
        for budget in budgets or task_budgets:
            scores = {name: [] for name in METHODS}
            for seed in range(seeds):
                rng = np.random.RandomState(seed)
                train = _draw(rng, yt, budget, regression)
                test = np.setdiff1d(np.arange(len(yt)), train)
                if quick:
                    test = test[:200]
                base = _estimator(kind, epochs, seed)
                base.set_params(source_params={"max_epochs": source_epochs})
                base.fit_source(Xs, ys)
                for name, model in _methods(base, epochs, seed, cv_repeats).items():
                    model.fit(Xt[train], yt[train])
                    # A search's own score is its scoring (log-loss); the chosen
                    # model's score is accuracy or R², as for every column.
                    model = getattr(model, "best_estimator_", model)
                    scores[name].append(model.score(Xt[test], yt[test]))
            results[task, budget] = scores
    return results


def format_table(results):
    """One markdown row per task and budget, one column per method."""
    lines = [
        "| task | labels | " + " | ".join(METHODS) + " |",
        "|---|---:|" + "---:|" * len(METHODS),
    ]
    for (task, budget), scores in results.items():
        cells = [f"{np.mean(s):.3f} ± {np.std(s):.3f}" for s in scores.values()]
        lines.append(f"| {task} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Methods that start from the pretrained weights (the probe included).
TRANSFER = [m for m in METHODS if m not in ("scratch", "GridSearchCV")]


def format_goals(results):
    """Return the issue's three goals per task and budget, and the tally."""
    lines, selected, probe = [], 0, []
    for (task, budget), scores in results.items():
        mean = {name: float(np.mean(s)) for name, s in scores.items()}
        best_transfer = max(TRANSFER, key=mean.get)
        best = max(mean["scratch"], mean[best_transfer])
        gap = 100 * (best - mean["GridSearchCV"])
        selected += gap <= 1
        winner = "scratch" if mean["scratch"] >= mean[best_transfer] else best_transfer
        gain = 100 * (mean[best_transfer] - mean["scratch"])
        line = (
            f"{task} {budget}: selected {mean['GridSearchCV']:.3f}, "
            f"{gap:+.1f} points below the best ({best:.3f}, {winner}); "
            f"best transfer ({best_transfer}) - scratch {gain:+.1f} points"
        )
        if task != "regression":
            diff = 100 * (mean["linear probe"] - mean["frozen features"])
            probe.append(diff >= 0)
            line += f"; probe - frozen features {diff:+.1f} points"
        lines.append(line)
    lines.append(
        f"selected model within 1 point of the best: {selected} of {len(results)}; "
        f"probe >= frozen features: {sum(probe)} of {len(probe)} classification rows"
    )
    return "\n".join(lines)


def ceiling(epochs, folds=5):
    """Scratch accuracy of the digits CNN with every labelled digit 5-9.

    Returns the test accuracy of each of ``folds`` stratified folds of the
    target pool, the CNN trained from scratch on the others (about 720
    images), with the benchmark's settings.
    """
    _, _, Xt, yt = _digits(None)
    scores = []
    splits = StratifiedKFold(folds, shuffle=True, random_state=0).split(Xt, yt)
    for seed, (train, test) in enumerate(splits):
        model = _estimator("images", epochs, seed).fit(Xt[train], yt[train])
        scores.append(model.score(Xt[test], yt[test]))
    return scores


def main(argv=None):
    """Run the benchmark and print its table; return the scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--budgets", default=None, help="e.g. 5,10 (all tasks)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--source-epochs", type=int, default=15)
    parser.add_argument(
        "--cv-repeats",
        type=int,
        default=1,
        help="repeats of the search's 5-fold split (RepeatedStratifiedKFold)",
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="digits from scratch on all labels"
    )
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
    seeds, epochs, source_epochs = args.seeds, args.epochs, args.source_epochs
    if args.quick:
        seeds, epochs, source_epochs, budgets = 1, 2, 1, [5]
    torch.set_num_threads(1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        if args.ceiling:
            scores = ceiling(epochs, folds=2 if args.quick else 5)
            print(
                f"digits 5-9 from scratch on all labels ({len(scores)}-fold, "
                f"epochs={epochs}): accuracy {np.mean(scores):.3f} ± "
                f"{np.std(scores):.3f}; wall time {time.perf_counter() - start:.0f} s"
            )
            return scores
        results = run(
            tasks,
            seeds,
            epochs,
            source_epochs,
            budgets,
            quick=args.quick,
            cv_repeats=args.cv_repeats,
        )
    print(
        f"seeds={seeds} epochs={epochs} source_epochs={source_epochs} "
        f"cv_repeats={args.cv_repeats} torch threads=1; "
        f"wall time {time.perf_counter() - start:.0f} s"
    )
    print(format_table(results))
    print(format_goals(results))
    return results


if __name__ == "__main__":
    main()
