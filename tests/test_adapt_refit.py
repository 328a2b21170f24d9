"""adaptation_refit: "no adaptation" unless every unsupervised scorer agrees."""

from functools import partial

import numpy as np
import pytest
from nets import tiny_classifier_net
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sktransfer
from sktransfer import TransferClassifier, adaptation_refit


def _results(params, **scores):
    """cv_results_ from per-candidate lists of per-split scores."""
    out = {"params": params}
    for metric, rows in scores.items():
        rows = np.asarray(rows, dtype=float)
        for k in range(rows.shape[1]):
            out[f"split{k}_test_{metric}"] = rows[:, k]
        out[f"mean_test_{metric}"] = rows.mean(axis=1)
    return out


PARAMS = [{"adapt_weight": 0.0}, {"adapt_weight": 1.0}, {"adapt_weight": 10.0}]


def test_keeps_no_adaptation_when_the_scorers_disagree():
    # Candidate 1 wins on iwv by far more than the spread, loses on dev.
    results = _results(
        PARAMS,
        iwv=[[0.60, 0.61, 0.62], [0.70, 0.71, 0.72], [0.50, 0.50, 0.50]],
        dev=[[-1.0, -1.0, -1.0], [-1.1, -1.2, -1.1], [-2.0, -2.0, -2.0]],
    )
    assert adaptation_refit(results) == 0
    assert adaptation_refit(results, metrics=["iwv"]) == 1


def test_a_gain_within_the_spread_is_not_enough():
    # Mean gain 0.02 on both metrics, but differences (0.1, -0.04, 0.0):
    # standard deviation 0.072 > 0.02.
    results = _results(
        PARAMS[:2],
        iwv=[[0.5, 0.5, 0.5], [0.6, 0.46, 0.5]],
        dev=[[-1.0, -1.0, -1.0], [-0.9, -1.04, -1.0]],
    )
    assert adaptation_refit(results) == 0


def test_picks_the_best_agreed_candidate_by_the_first_metric():
    # Both adapted candidates beat "no adaptation" on both metrics by more
    # than their spread; candidate 2 has the higher mean iwv.
    results = _results(
        PARAMS,
        iwv=[[0.5, 0.5, 0.5], [0.60, 0.62, 0.61], [0.70, 0.69, 0.71]],
        dev=[[-1.0, -1.0, -1.0], [-0.5, -0.5, -0.6], [-0.9, -0.88, -0.9]],
    )
    assert adaptation_refit(results) == 2
    assert adaptation_refit(results, metrics=["dev", "iwv"]) == 1


def test_the_best_baseline_is_the_reference():
    # Two "no adaptation" candidates (adapt=None and adapt_weight=0): the
    # better one by mean iwv is the reference, and candidate 2 does not beat
    # it; with only adapt=None as "no adaptation", candidate 2 beats that one
    # and candidate 1's gain (0.4, 0.0) is within its spread.
    params = [
        {"adapt": None},
        {"adapt": "coral", "adapt_weight": 0.0},
        {"adapt": "mmd"},
    ]
    results = _results(
        params,
        iwv=[[0.5, 0.5], [0.9, 0.5], [0.65, 0.66]],
    )
    assert adaptation_refit(results) == 1
    custom = partial(adaptation_refit, baseline=lambda p: p.get("adapt") is None)
    assert custom(results) == 2


def test_bad_results_are_refused():
    results = _results(PARAMS[1:], iwv=[[0.5, 0.6], [0.5, 0.6]])
    with pytest.raises(ValueError, match="no candidate is 'no adaptation'"):
        adaptation_refit(results)
    results = _results(PARAMS, iwv=[[0.5], [0.6], [0.7]])
    with pytest.raises(ValueError, match="1 split"):
        adaptation_refit(results)
    results = _results(PARAMS, iwv=[[0.5, 0.5], [0.6, 0.6], [0.7, 0.7]])
    with pytest.raises(ValueError, match="metrics \\['dev'\\] not among \\['iwv'\\]"):
        adaptation_refit(results, metrics=["dev"])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_as_refit_of_a_grid_search():
    X, y = make_classification(
        180, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    X[120:] += 1.5
    y[120:] = -1
    clf = TransferClassifier(tiny_classifier_net(max_epochs=1), adapt="mmd")
    search = GridSearchCV(
        clf,
        {"adapt_weight": [0.0, 1.0, 10.0]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring={
            "iwv": sktransfer.importance_weighted_scorer,
            "dev": sktransfer.deep_embedded_validation_scorer,
        },
        refit=adaptation_refit,
    ).fit(X, y)
    assert search.best_index_ == adaptation_refit(search.cv_results_)
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert search.best_estimator_.adapt_weight == search.best_params_["adapt_weight"]
