"""Benchmarks of sktransfer against hand-written PyTorch, plain skorch and naive use.

Run from the repository root::

    python benchmarks/run.py              # everything: under 10 minutes on 2 CPU cores
    python benchmarks/run.py --quick      # every size shrunk: a smoke run, ~25 s
    python benchmarks/run.py --only frozen

It prints a line with the versions, torch's thread count and the repetitions,
then one markdown table: for each benchmark the sktransfer figure, the
baseline's, their ratio, the goal and whether the goal is met. The Dask section
(``benchmarks/dask_workers.py``, skipped without Dask) adds its own detailed
table after it.

The machine these run on is shared and noisy. Within each repetition the
contestants run one after the other, in an order rotated from one repetition
to the next, so that a slow spell hits all of them; each ratio is the median
over the repetitions of the ratio measured within one repetition, and each
absolute figure is the median of its own measurements. Everything is seeded.

The data come from scikit-learn's 8x8 digits only: for MNIST-sized inputs the
images are upsampled to 28x28, scaled to [0, 1] and tiled to the needed number
of samples with small seeded noise.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import io
import multiprocessing
import operator
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.ndimage
import sklearn
import skorch
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from torch import nn

import sktransfer
from sktransfer import MLP, TransferClassifier

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
    memory_reps : int
        Peak-memory measurements of each kind of fine-tuning.
    predict_rows, predict_reps : int
        Rows to predict and repetitions.
    """

    finetune_samples: int = 30_000
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
    memory_reps: int = 3
    predict_rows: int = 100_000
    predict_reps: int = 3


FULL = Sizes()
QUICK = replace(
    FULL,
    finetune_samples=1_500,
    finetune_epochs=1,
    finetune_reps=1,
    finetune_source=500,
    frozen_source=300,
    frozen_source_epochs=1,
    frozen_samples=256,
    frozen_test=128,
    frozen_epochs=2,
    frozen_reps=1,
    grid_source_epochs=1,
    grid_epochs=1,
    grid_reps=1,
    memory_reps=1,
    predict_rows=5_000,
    predict_reps=1,
)

# The grid of the search benchmark: 4 candidates, 3 folds, plus the refit.
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


# ----------------------------------------------- 1. the fine-tuning loop


def hand_written_loop(X, y, *, batch_size, max_epochs):
    """Train the MLP 784-256-128-10 with a plain PyTorch loop.

    Parameters
    ----------
    X : ndarray of shape (n_samples, 784), float32
        Samples.
    y : ndarray of shape (n_samples,), int64
        Classes 0-9.
    batch_size, max_epochs : int
        Batch size and epochs.

    Returns
    -------
    loss : float
        The summed batch losses of the last epoch.
    """
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model = MLP(X.shape[1], 10, hidden_layer_sizes=(256, 128))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    model.train()
    n = len(X)
    for _ in range(max_epochs):
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, batch_size):
            index = perm[i : i + batch_size]
            xb, yb = X[index], y[index]
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            # A real loop logs the epoch's loss, which reads every batch's
            # loss back (skorch does the same for its history).
            total += loss.item()
    return total


def plain_skorch_fit(X, y, *, batch_size, max_epochs):
    """Fit the MLP 784-256-128-10 with plain skorch (its own ``DataLoader``).

    Parameters
    ----------
    X : ndarray of shape (n_samples, 784), float32
        Samples.
    y : ndarray of shape (n_samples,), int64
        Classes 0-9.
    batch_size, max_epochs : int
        Batch size and epochs.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        The fitted net.
    """
    net = _mlp_net(
        batch_size, max_epochs, module__n_features_in=X.shape[1], module__n_outputs=10
    )
    return net.fit(X, y)


def _finetune_contestants(transfer, X, y, batch_size, max_epochs):
    """Return the three ways of training on ``X``, ``y``, by name."""
    settings = {"batch_size": batch_size, "max_epochs": max_epochs}
    return {
        "sktransfer": functools.partial(transfer.fit, X, y),
        "hand": functools.partial(hand_written_loop, X, y, **settings),
        "skorch": functools.partial(plain_skorch_fit, X, y, **settings),
    }


def bench_finetune(sizes):
    """Fine-tuning ``fit`` against a hand-written loop and plain skorch.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Two rows per batch size.
    """
    X, y = mnist_like("all", sizes.finetune_samples, seed=1, flat=True)
    X_source, y_source = mnist_like("source", sizes.finetune_source, seed=2, flat=True)
    epochs = sizes.finetune_epochs
    rows = []
    for batch_size in (32, 128):
        transfer = TransferClassifier(
            _mlp_net(batch_size, epochs),
            source_params={"max_epochs": 1},
            random_state=0,
        ).fit_source(X_source, y_source)
        # One small untimed run of each first: lazy initialisation is not a cost
        # of whichever contestant happens to run first.
        small = _finetune_contestants(transfer, X[:500], y[:500], batch_size, epochs)
        for fn in small.values():
            fn()
        contestants = _finetune_contestants(transfer, X, y, batch_size, epochs)
        times = {name: [] for name in contestants}
        for rep in range(sizes.finetune_reps):
            for name in _rotated(list(contestants), rep):
                seconds, _ = _timed(contestants[name], seed=rep)
                times[name].append(seconds)
        median = {name: statistics.median(ts) for name, ts in times.items()}
        label = f"fine-tune bs={batch_size}"
        rows += [
            _row(
                "finetune",
                f"{label}: sktransfer / hand-written loop",
                median["sktransfer"],
                median["hand"],
                _median_ratio(times["sktransfer"], times["hand"]),
                "≤ 1.10",
                "s",
                per_rep=(times["sktransfer"], times["hand"]),
            ),
            _row(
                "finetune",
                f"{label}: sktransfer / plain skorch",
                median["sktransfer"],
                median["skorch"],
                _median_ratio(times["sktransfer"], times["skorch"]),
                "< 1",
                "s",
                per_rep=(times["sktransfer"], times["skorch"]),
            ),
        ]
    return rows


# --------------------------------------------- 2. frozen stage computed once


@functools.cache
def _cnn_task(sizes):
    """Return the CNN pretrained on digits 0-4, and digits 5-9 to tune and test on."""
    X_source, y_source = mnist_like("source", sizes.frozen_source, seed=3)
    transfer = TransferClassifier(
        _classifier_net(SmallCNN, batch_size=64, max_epochs=sizes.frozen_epochs),
        frozen="features.*",
        source_params={"max_epochs": sizes.frozen_source_epochs},
        random_state=0,
    ).fit_source(X_source, y_source)
    X, y = mnist_like("target", sizes.frozen_samples, seed=4)
    X_test, y_test = mnist_like("test", sizes.frozen_test, seed=5)
    return transfer, X, y, X_test, y_test


def bench_frozen(sizes):
    """Fine-tuning with frozen features: computed once (cached) or every epoch.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Per-epoch and whole-``fit`` time ratios, and whether both ways predict
        the same.
    """
    pretrained, X, y, X_test, y_test = _cnn_task(sizes)
    fits = {
        cached: functools.partial(
            clone(pretrained).set_params(cache_frozen=cached).fit, X, y
        )
        for cached in (True, False)
    }
    times = {True: [], False: []}
    epochs = {True: [], False: []}
    fitted = {}
    for rep in range(sizes.frozen_reps):
        for cached in _rotated([True, False], rep):
            seconds, estimator = _timed(fits[cached], seed=rep)
            times[cached].append(seconds)
            epochs[cached].append(statistics.median(estimator.net_.history[:, "dur"]))
            fitted[cached] = estimator
    report = fitted[True].frozen_cache_
    pred = {cached: fitted[cached].predict(X_test) for cached in (True, False)}
    accuracy = {cached: float(np.mean(pred[cached] == y_test)) for cached in pred}
    agree = float(np.mean(pred[True] == pred[False]))
    where = (
        f"cached={report['cached']}, stage {report['stage']!r}, "
        f"{report['nbytes'] / 2**20:.0f} MiB"
    )
    common = {"cached": report["cached"], "frozen_cache": report}
    return [
        _row(
            "frozen",
            f"frozen features, per epoch: uncached / cached ({where})",
            statistics.median(epochs[True]),
            statistics.median(epochs[False]),
            _median_ratio(epochs[False], epochs[True]),
            "≥ 5",
            "s",
            per_rep=(epochs[True], epochs[False]),
            **common,
        ),
        _row(
            "frozen",
            f"frozen features, whole fit ({sizes.frozen_epochs} epochs): "
            "uncached / cached",
            statistics.median(times[True]),
            statistics.median(times[False]),
            _median_ratio(times[False], times[True]),
            None,
            "s",
            per_rep=(times[True], times[False]),
            **common,
        ),
        _row(
            "frozen",
            "frozen features: same test predictions cached / uncached "
            "(columns: accuracy)",
            accuracy[True],
            accuracy[False],
            agree,
            "= 1",
            "accuracy",
            agreement=agree,
            **common,
        ),
    ]


# ------------------------------------------ 3. grid search pays pretraining once

# What the pretraining calls cost, accumulated by _TimedTransfer.fit_source.
_PRETRAINING = {"calls": 0, "seconds": 0.0}

# The source data the naive estimator pretrains on in every fit.
_NAIVE_SOURCE = {}


class _TimedTransfer(TransferClassifier):
    """A TransferClassifier that counts and times its ``fit_source`` calls."""

    def fit_source(self, X, y):
        """Pretrain as TransferClassifier does, and account for it."""
        start = time.perf_counter()
        try:
            return super().fit_source(X, y)
        finally:
            _PRETRAINING["calls"] += 1
            _PRETRAINING["seconds"] += time.perf_counter() - start


class _NaiveTransfer(_TimedTransfer):
    """Pretrains again in every ``fit``: the search without shared pretraining."""

    def fit(self, X, y):
        """Pretrain on the source, then fine-tune on ``X``, ``y``."""
        self.fit_source(_NAIVE_SOURCE["X"], _NAIVE_SOURCE["y"])
        return super().fit(X, y)


def _search(estimator, X, y):
    """Grid-search the learning rate; return the fitted search."""
    search = GridSearchCV(
        estimator,
        {"net__lr": list(GRID_LR)},
        cv=GRID_CV,
        n_jobs=1,
        refit=True,
        error_score="raise",
    )
    return search.fit(X, y)


def _pretraining_during(fn):
    """Run ``fn()``; return its result and the fit_source calls and seconds in it."""
    _PRETRAINING.update(calls=0, seconds=0.0)
    result = fn()
    return result, dict(_PRETRAINING)


def bench_gridsearch(sizes):
    """Grid search from shared pretrained weights against pretraining in every fit.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Pretraining time and calls, and total time, naive / shared.
    """
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    source, target = y < 5, y >= 5
    params = {
        "net": _classifier_net(
            MLP,
            module__hidden_layer_sizes=(128, 64),
            batch_size=32,
            max_epochs=sizes.grid_epochs,
        ),
        # The pretraining's own lr: the naive way then pretrains exactly as the
        # shared way does, whatever lr the candidate fine-tunes with.
        "source_params": {"max_epochs": sizes.grid_source_epochs, "lr": 1e-3},
        "random_state": 0,
    }

    def shared():
        _PRETRAINING.update(calls=0, seconds=0.0)
        estimator = _TimedTransfer(**params).fit_source(X[source], y[source])
        pretraining = dict(_PRETRAINING)
        search, during = _pretraining_during(
            functools.partial(_search, estimator, X[target], y[target])
        )
        return search, pretraining, during

    def naive():
        search, during = _pretraining_during(
            functools.partial(_search, _NaiveTransfer(**params), X[target], y[target])
        )
        return search, during, during

    _NAIVE_SOURCE.update(X=X[source], y=y[source])
    try:
        # Untimed warm-up: lazy initialisation is not a cost of the first run.
        _TimedTransfer(**params).fit_source(X[source][:100], y[source][:100])
        contestants = {"shared": shared, "naive": naive}
        total = {"shared": [], "naive": []}
        pretraining = {"shared": [], "naive": []}
        calls, scores = {}, {}
        for rep in range(sizes.grid_reps):
            for name in _rotated(list(contestants), rep):
                seconds, (search, pretrained, during) = _timed(
                    contestants[name], seed=rep
                )
                total[name].append(seconds)
                pretraining[name].append(pretrained["seconds"])
                calls[name] = {"all": pretrained["calls"], "search": during["calls"]}
                scores[name] = search.cv_results_["mean_test_score"]
    finally:
        _NAIVE_SOURCE.clear()
    label = f"grid search {len(GRID_LR)}x{GRID_CV}"
    extra = {
        "calls_naive": calls["naive"]["search"],
        "calls_shared_before_search": calls["shared"]["all"],
        "calls_shared_in_search": calls["shared"]["search"],
        "n_fits": GRID_FITS,
        # Both ways pretrain and fine-tune alike: the same cross-validation.
        "same_scores": bool(np.allclose(scores["naive"], scores["shared"])),
    }
    return [
        _row(
            "gridsearch",
            f"{label}: pretraining time naive / shared "
            f"({extra['calls_naive']} vs {extra['calls_shared_before_search']} "
            "fit_source calls)",
            statistics.median(pretraining["shared"]),
            statistics.median(pretraining["naive"]),
            _median_ratio(pretraining["naive"], pretraining["shared"]),
            f"≥ {GRID_FITS}",
            "s",
            per_rep=(pretraining["shared"], pretraining["naive"]),
            **extra,
        ),
        _row(
            "gridsearch",
            f"{label}: fit_source calls naive / shared "
            f"({extra['calls_shared_in_search']} in the shared search)",
            calls["shared"]["all"],
            calls["naive"]["all"],
            calls["naive"]["all"] / calls["shared"]["all"],
            f"≥ {GRID_FITS}",
            "calls",
            **extra,
        ),
        _row(
            "gridsearch",
            f"{label}: total time naive / shared (shared incl. its pretraining)",
            statistics.median(total["shared"]),
            statistics.median(total["naive"]),
            _median_ratio(total["naive"], total["shared"]),
            "> 1",
            "s",
            per_rep=(total["shared"], total["naive"]),
            **extra,
        ),
    ]


# --------------------------------------------------------- 4. peak memory

# The three ways of fine-tuning the CNN, as estimator parameters.
_MEMORY_MODES = {
    "full": {"frozen": (), "cache_frozen": False},
    "frozen, uncached": {"frozen": "features.*", "cache_frozen": False},
    "frozen, cached": {"frozen": "features.*", "cache_frozen": True},
}


def peak_rss():
    """Return the peak resident memory of this process so far, in bytes.

    On Linux this reads ``VmHWM`` from ``/proc/self/status``, the process's
    own high-water mark: ``ru_maxrss`` of a spawned child starts at the peak
    of the process that spawned it (Linux carries it over the ``exec``; a
    child of a 1.5 GiB parent reports 1.5 GiB before doing anything), which
    would hide any fit smaller than the parent. Elsewhere, ``ru_maxrss``.

    Returns
    -------
    peak : int
        Bytes.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS


def memory_worker(job, sender):
    """Fine-tune once in this process; send the extra peak memory of ``fit``.

    Runs in a fresh child process: the peak resident memory is a high-water
    mark since the process started that never goes down, so one process can
    measure one ``fit`` only, and nothing before it may have gone higher.

    Parameters
    ----------
    job : tuple
        ``(estimator, params, X, y)``: a pretrained estimator, the parameters
        of one fine-tuning mode, the target data.
    sender : multiprocessing.connection.Connection
        Where to send ``(extra, report)``: the peak resident memory during
        ``fit`` above the peak before it, in bytes, and the fitted
        estimator's ``frozen_cache_``.
    """
    estimator, params, X, y = job
    # Children may run side by side on the 2 cores; one thread each avoids
    # oversubscription and leaves the memory the fit needs unchanged.
    torch.set_num_threads(1)
    estimator = clone(estimator).set_params(**params)
    # Warm-up fit on two samples: it loads the code and lazily initialised
    # state of every operation the fit uses (about 100 MiB, a fixed cost of
    # the process, not of a fit), so that what is measured below is what
    # grows with the data and the batch.
    pair = [0, int(np.flatnonzero(y != y[0])[0])]
    clone(estimator).set_params(net__batch_size=2).fit(X[pair], y[pair])
    gc.collect()
    before = peak_rss()
    estimator.fit(X, y)
    sender.send((peak_rss() - before, estimator.frozen_cache_))
    sender.close()


def _in_fresh_processes(jobs, processes):
    """Run ``memory_worker`` on each job, each in a fresh ``spawn`` process.

    At most ``processes`` run at a time. A spawned child imports the worker
    by its module name, with the parent's ``sys.path``: this file's folder is
    put on it meanwhile, and the module must be named after the file (or be
    the script being run).
    """
    here = str(Path(__file__).resolve().parent)
    if __name__ != "__main__" and __name__ != Path(__file__).stem:
        msg = (
            f"benchmarks/run.py was imported as module {__name__!r}; import it as "
            f"{Path(__file__).stem!r} or run it as a script, so that spawned "
            "child processes can import its worker."
        )
        raise RuntimeError(msg)
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        context = multiprocessing.get_context("spawn")
        results = []
        for first in range(0, len(jobs), processes):
            results += _run_children(context, jobs[first : first + processes])
    finally:
        if added:
            sys.path.remove(here)
    return results


def _run_children(context, jobs):
    """Run one child process per job side by side; return their results in order."""
    running = []
    try:
        for job in jobs:
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(target=memory_worker, args=(job, sender))
            child.start()
            sender.close()
            running.append((child, receiver))
        results = []
        for child, receiver in running:
            try:
                results.append(receiver.recv())
            except EOFError:
                child.join()
                msg = (
                    f"A memory benchmark process failed (exit code "
                    f"{child.exitcode}); its traceback is printed above."
                )
                raise RuntimeError(msg) from None
            child.join()
    finally:
        for child, _ in running:  # the others, if one failed
            if child.is_alive():
                child.terminate()
                child.join()
    return results


def bench_memory(sizes):
    """Extra peak memory of ``fit``: full against frozen fine-tuning of the CNN.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Frozen (uncached and cached) against full fine-tuning.
    """
    pretrained, X, y, _, _ = _cnn_task(sizes)
    # One epoch: the peak is reached in the first.
    pretrained = clone(pretrained).set_params(net__max_epochs=1)
    modes = list(_MEMORY_MODES)
    order = [mode for rep in range(sizes.memory_reps) for mode in _rotated(modes, rep)]
    jobs = [(pretrained, _MEMORY_MODES[mode], X, y) for mode in order]
    results = _in_fresh_processes(jobs, len(modes))
    mib = {mode: [] for mode in modes}
    reports = {}
    for mode, (extra, report) in zip(order, results, strict=True):
        mib[mode].append(extra / 2**20)
        reports[mode] = report
    cached = reports["frozen, cached"]
    rows = []
    for mode, goal in (("frozen, uncached", "< 1"), ("frozen, cached", None)):
        note = ""
        if mode == "frozen, cached":
            note = f" (holds the {cached['nbytes'] / 2**20:.0f} MiB cache)"
        rows.append(
            _row(
                "memory",
                f"peak RSS of fit, {mode} / full fine-tuning{note}",
                statistics.median(mib[mode]),
                statistics.median(mib["full"]),
                _median_ratio(mib[mode], mib["full"]),
                goal,
                "MiB",
                per_rep=(mib[mode], mib["full"]),
                cached=reports[mode]["cached"],
            )
        )
    return rows


# ------------------------------------------------- 5. prediction throughput


def direct_predict_proba(module, batch_size, X):
    """Return class probabilities from the torch module itself, batch by batch.

    Parameters
    ----------
    module : torch.nn.Module
        A classifier returning logits.
    batch_size : int
        Samples per forward pass.
    X : ndarray of float32
        Samples.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes), float32
        Softmax of the logits.
    """
    module.eval()
    X = torch.from_numpy(X)
    with torch.no_grad():
        parts = [
            torch.softmax(module(X[i : i + batch_size]), dim=1)
            for i in range(0, len(X), batch_size)
        ]
    return torch.cat(parts).numpy()


def bench_predict(sizes):
    """``predict_proba`` rate: sktransfer, the torch module, plain skorch.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        sktransfer against the module called directly and against plain skorch.
    """
    batch_size = 128
    X_source, y_source = mnist_like("source", sizes.finetune_source, seed=2, flat=True)
    X_fit, y_fit = mnist_like("all", sizes.finetune_source, seed=6, flat=True)
    transfer = TransferClassifier(_mlp_net(batch_size, 1), random_state=0)
    transfer.fit_source(X_source, y_source).fit(X_fit, y_fit)
    module = transfer.net_.module_
    plain = _mlp_net(
        batch_size, 1, module__n_features_in=X_fit.shape[1], module__n_outputs=10
    ).initialize()
    plain.module_.load_state_dict(module.state_dict())
    X, _ = mnist_like("all", sizes.predict_rows, seed=7, flat=True)
    contestants = {
        "sktransfer": transfer.predict_proba,
        "direct": functools.partial(direct_predict_proba, module, batch_size),
        "skorch": plain.predict_proba,
    }
    for fn in contestants.values():  # untimed warm-up
        fn(X[:2_000])
    times = {name: [] for name in contestants}
    proba = {}
    for rep in range(sizes.predict_reps):
        for name in _rotated(list(contestants), rep):
            seconds, proba[name] = _timed(
                functools.partial(contestants[name], X), seed=rep
            )
            times[name].append(seconds)
    # The three give the same probabilities (float64 against float32).
    deviation = max(
        float(np.abs(proba[name] - proba["direct"]).max())
        for name in ("sktransfer", "skorch")
    )
    rate = {name: len(X) / statistics.median(ts) for name, ts in times.items()}
    label = f"predict_proba {len(X):,} rows"
    return [
        _row(
            "predict",
            f"{label}: sktransfer / direct module (time)",
            rate["sktransfer"],
            rate["direct"],
            _median_ratio(times["sktransfer"], times["direct"]),
            None,  # the issue sets no goal: input validation and skorch's batches
            "rows/s",
            per_rep=(times["sktransfer"], times["direct"]),
            max_abs_deviation=deviation,
        ),
        _row(
            "predict",
            f"{label}: plain skorch / sktransfer (time)",
            rate["sktransfer"],
            rate["skorch"],
            _median_ratio(times["skorch"], times["sktransfer"]),
            "> 1",
            "rows/s",
            per_rep=(times["sktransfer"], times["skorch"]),
            max_abs_deviation=deviation,
        ),
    ]


# ------------------------------------------------------------------- report

# ------------------------------------------- 6. grid search on a Dask cluster


def bench_dask(sizes):
    """Run ``dask_workers.py`` (1 vs 2 workers, weights shipped once or not).

    It prints its own, more detailed table first; two of its figures join the
    main table. Without Dask installed the section is left out with a note.

    Returns
    -------
    rows : list of dict
        Two rows: wall time 1 worker / 2 workers, and the bytes sent per task
        batch with the weights in every task / shipped once.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        _progress('dask: skipped, Dask is not installed (pip install ".[dask]")')
        return []
    path = Path(__file__).with_name("dask_workers.py")
    spec = importlib.util.spec_from_file_location("dask_workers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dask_workers"] = module  # its dataclasses look themselves up
    try:
        spec.loader.exec_module(module)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            results = module.main(["--quick"] if sizes is QUICK else [])
    finally:
        del sys.modules["dask_workers"]
    details = "benchmarks/dask_workers.py:\n" + out.getvalue()
    by = {(row["cluster"], row["shipped_once"]): row for row in results}
    one_worker, two_workers = (config.label for config in module.CONFIGS[1:])
    one, two = by[one_worker, True], by[two_workers, True]
    every = by[two_workers, False]
    return [
        _row(
            "dask",
            "grid search on Dask: wall time 1 worker / 2 workers",
            two["seconds"],
            one["seconds"],
            one["seconds"] / two["seconds"],
            None,
            "s",
            details=details,
        ),
        _row(
            "dask",
            "Dask, client to scheduler per task batch: weights in every task / "
            "shipped once",
            two["per_batch"] / 1e3,
            every["per_batch"] / 1e3,
            every["per_batch"] / two["per_batch"],
            "> 1",
            "kB",
        ),
    ]


SECTIONS = {
    "finetune": bench_finetune,
    "frozen": bench_frozen,
    "gridsearch": bench_gridsearch,
    "memory": bench_memory,
    "predict": bench_predict,
    "dask": bench_dask,
}


def _repetitions(sizes):
    return {
        "finetune": sizes.finetune_reps,
        "frozen": sizes.frozen_reps,
        "gridsearch": sizes.grid_reps,
        "memory": sizes.memory_reps,
        "predict": sizes.predict_reps,
        "dask": "see its table",
    }


def _format(value, unit):
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "calls":
        return f"{value:.0f} calls"
    if unit == "kB":
        return f"{value:,.1f} kB"
    return f"{value:.3f}"


def format_table(rows):
    """Return the rows as a markdown table.

    Parameters
    ----------
    rows : list of dict
        Rows as the benchmark functions return them.

    Returns
    -------
    table : str
        The table, one line per row after the header.
    """
    header = ("benchmark", "sktransfer", "baseline", "ratio", "goal", "met")
    lines = [
        (
            row["benchmark"],
            _format(row["sktransfer"], row["unit"]),
            _format(row["baseline"], row["unit"]),
            f"{row['ratio']:.3f}",
            row["goal"] or "—",
            {True: "yes", False: "NO", None: "—"}[row["met"]],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(6)]

    def join(cells):
        padded = [cell.ljust(w) for cell, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([join(header), rule, *(join(line) for line in lines)])


def main(argv=None):
    """Run the benchmarks, print the table and return its rows.

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments; ``sys.argv[1:]`` if None.

    Returns
    -------
    rows : list of dict
        One dict per table row: ``section``, ``benchmark``, ``sktransfer`` and
        ``baseline`` (medians, in ``unit``), ``ratio``, ``goal``, ``met``, and
        what a section adds (e.g. ``cached``, ``calls_naive``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="shrink every size (a ~25 s smoke run)"
    )
    parser.add_argument("--only", choices=list(SECTIONS), help="run one section")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    names = [args.only] if args.only else list(SECTIONS)
    start = time.perf_counter()
    rows = []
    for name in names:
        _progress(f"{name} ...")
        section_start = time.perf_counter()
        rows += SECTIONS[name](sizes)
        _progress(f"{name}: {time.perf_counter() - section_start:.0f} s")
    reps = _repetitions(sizes)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"skorch {skorch.__version__}, scikit-learn {sklearn.__version__}, "
        f"sktransfer {sktransfer.__version__}; "
        f"torch.get_num_threads()={torch.get_num_threads()}; repetitions: "
        + ", ".join(f"{name} {reps[name]}" for name in names)
        + (" (--quick)" if args.quick else "")
    )
    print()
    print(format_table(rows))
    print()
    print(f"total wall time: {time.perf_counter() - start:.0f} s")
    for row in rows:
        if "details" in row:
            print()
            print(row["details"].rstrip())
    return rows


if __name__ == "__main__":
    main()
