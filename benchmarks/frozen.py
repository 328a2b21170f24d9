"""A frozen stage computed once per fit (cached) against every epoch."""

from __future__ import annotations

import functools
import statistics

import numpy as np
from sklearn.base import clone

from sktransfer import TransferClassifier

from .common import (
    SmallCNN,
    _classifier_net,
    _median_ratio,
    _rotated,
    _row,
    _timed,
    mnist_like,
)

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
