"""Frozen outputs shared by the fits of a search and of repeated cross-validation."""

from __future__ import annotations

import statistics

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import (
    GridSearchCV,
    ParameterGrid,
    StratifiedKFold,
    cross_val_score,
)

import sktransfer
from sktransfer._frozen_stage import _store

from .common import GRID_CV, GRID_FITS, GRID_LR, _median_ratio, _rotated, _row, _timed
from .frozen import _cnn_task

# Folds of the repeated cross-validation, and how often it runs.
CV_FOLDS = 5
CV_RUNS = 3


def _one_by_one(estimator, X, y):
    """Fit every candidate on every fold, then the refit, with no store.

    Returns the mean test score of each candidate, in the grid's order.
    """
    folds = list(StratifiedKFold(GRID_CV).split(X, y))
    scores = []
    for params in ParameterGrid({"net__lr": list(GRID_LR)}):
        fold_scores = []
        for train, test in folds:
            fitted = clone(estimator).set_params(**params).fit(X[train], y[train])
            fold_scores.append(fitted.score(X[test], y[test]))
        scores.append(np.mean(fold_scores))
    clone(estimator).set_params(net__lr=GRID_LR[0]).fit(X, y)  # the refit
    return np.array(scores)


def _search(estimator, X, y):
    """Run the same fits as one GridSearchCV, sharing frozen outputs; its scores."""
    search = GridSearchCV(
        estimator, {"net__lr": list(GRID_LR)}, cv=GRID_CV, error_score="raise"
    )
    return search.fit(X, y).cv_results_["mean_test_score"]


def bench_reuse(sizes):
    """Time a search and repeated cross-validation with frozen outputs shared.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        The search against its fits one by one without the store; the stage
        passes of repeated cross-validation; the cost of the store's key
        against the stage pass it saves.
    """
    pretrained, X, y, _, _ = _cnn_task(sizes)
    X, y = X[: sizes.reuse_samples], y[: sizes.reuse_samples]
    estimator = clone(pretrained).set_params(net__max_epochs=sizes.reuse_epochs)
    limit = _store.STORE.max_bytes

    passes = {}

    def search():
        sktransfer.clear_frozen_store()
        sktransfer.set_frozen_store_limit(limit)
        scores = _search(estimator, X, y)
        passes.update(_store.STORE.info())
        return scores

    def one_by_one():
        sktransfer.set_frozen_store_limit(0)
        return _one_by_one(estimator, X, y)

    contestants = {"search": search, "one by one": one_by_one}
    times = {name: [] for name in contestants}
    scores = {}
    try:
        for rep in range(sizes.reuse_reps):
            for name in _rotated(list(contestants), rep):
                seconds, scores[name] = _timed(contestants[name], seed=rep)
                times[name].append(seconds)
        # Repeated cross-validation: stage passes with the store (fit's over
        # each fold's training rows; score runs the fitted network as it is).
        sktransfer.set_frozen_store_limit(limit)
        sktransfer.clear_frozen_store()
        for _ in range(CV_RUNS):
            cross_val_score(estimator, X, y, cv=CV_FOLDS)
        cv_passes = _store.STORE.info()["misses"]
        # What the key costs against the stage pass it saves (one fit each way).
        sktransfer.clear_frozen_store()
        computed = clone(estimator).fit(X, y).frozen_cache_
        reused = clone(estimator).fit(X, y).frozen_cache_
    finally:
        sktransfer.clear_frozen_store()
        sktransfer.set_frozen_store_limit(limit)
    assert reused["outputs"] == "reused", reused
    same = bool(np.array_equal(scores["search"], scores["one by one"]))
    label = f"search {len(GRID_LR)}x{GRID_CV}, frozen CNN features"
    return [
        _row(
            "reuse",
            f"{label}: search sharing frozen outputs / the {GRID_FITS} fits one by one",
            statistics.median(times["search"]),
            statistics.median(times["one by one"]),
            _median_ratio(times["search"], times["one by one"]),
            "≤ 0.6",
            "s",
            per_rep=(times["search"], times["one by one"]),
            same_scores=same,
            # The search's stage passes (fits that ran the stage over some
            # rows) and the rows they ran it on; one by one, every fit runs it
            # over all its training rows.
            stage_passes=passes["misses"],
            rows_computed=passes["rows_computed"],
            rows_reused=passes["rows_reused"],
            n_samples=len(X),
        ),
        _row(
            "reuse",
            f"cross_val_score cv={CV_FOLDS} run {CV_RUNS} times: stage passes of "
            "fit / folds (each fold's training rows once)",
            cv_passes,
            CV_RUNS * CV_FOLDS,
            cv_passes / CV_FOLDS,
            "≤ 1",
            "calls",
            stage_passes=cv_passes,
        ),
        _row(
            "reuse",
            f"store key (record, stage, digest of {len(X)} rows) / the stage "
            "pass it saves",
            computed["digest_seconds"],
            computed["compute_seconds"],
            computed["digest_seconds"] / computed["compute_seconds"],
            "≤ 0.1",
            "s",
        ),
    ]
