"""A grid search pays pretraining once: shared weights against pretraining per fit."""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sktransfer import MLP, TransferClassifier

from .common import (
    GRID_CV,
    GRID_FITS,
    GRID_LR,
    _classifier_net,
    _median_ratio,
    _rotated,
    _row,
    _timed,
)

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
