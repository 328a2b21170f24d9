"""Scoring without target labels: the scorers and adaptation_refit."""

from functools import partial

import numpy as np
import pytest
from nets import tiny_classifier_net
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sktransfer
from sktransfer import TransferClassifier, adaptation_refit
from sktransfer._selection import _unsupervised


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


def test_adabn_at_weight_zero_is_not_the_no_adaptation_candidate():
    # AdaBN adapts the statistics at any adapt_weight: with it counted as the
    # baseline, the rule refitted an adapted model as "no adaptation".
    params = [
        {"adapt": "adabn", "adapt_weight": 0.0},
        {"adapt": "coral", "adapt_weight": 0.0},
        {"adapt": "coral", "adapt_weight": 1.0},
    ]
    results = _results(
        params,
        iwv=[[0.90, 0.91, 0.92], [0.60, 0.61, 0.62], [0.60, 0.61, 0.62]],
        dev=[[-0.5, -0.5, -0.5], [-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]],
    )
    # AdaBN wins everywhere, but only as an adapted candidate beating the
    # baseline (coral at weight 0) on every metric beyond the spread.
    assert adaptation_refit(results) == 0
    only_adabn = _results(params[:1], iwv=[[0.9, 0.9, 0.9]], dev=[[-0.5, -0.5, -0.5]])
    with pytest.raises(ValueError, match="no candidate is 'no adaptation'"):
        adaptation_refit(only_adabn)


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


# ------------------------------------------------------------------ scorers


class Fixed(ClassifierMixin, BaseEstimator):
    """Predicts fixed probabilities, one row per sample (X holds row indices)."""

    def __init__(self, proba=None, features=None):
        self.proba = proba
        self.features = features

    def fit(self, X, y):
        return self

    @property
    def classes_(self):
        return np.arange(self.proba.shape[1])

    def predict_proba(self, X):
        return self.proba[np.asarray(X, dtype=int)[:, 0]]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)

    def transform(self, X):
        return self.features[np.asarray(X, dtype=int)[:, 0]]


def test_prediction_entropy_on_hand_made_predictions():
    proba = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1], [0.2, 0.8]])
    est = Fixed(proba)
    X = np.arange(4)[:, None]
    h = [np.log(2), 0.0, -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))]
    assert sktransfer.prediction_entropy_scorer(est, X[:3]) == pytest.approx(
        -np.mean(h)
    )
    # With y, only the unlabelled rows (-1) are scored.
    y = np.array([-1, 0, -1, 1])
    assert sktransfer.prediction_entropy_scorer(est, X, y) == pytest.approx(
        -(h[0] + h[2]) / 2
    )
    with pytest.raises(ValueError, match="y marks none"):
        sktransfer.prediction_entropy_scorer(est, X, np.array([0, 1, 0, 1]))


def test_importance_weighted_on_hand_made_weights(monkeypatch):
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5], [0.5, 0.5]])
    est = Fixed(proba)
    X = np.arange(5)[:, None]
    y = np.array([0, 0, 1, -1, -1])  # predictions 0, 1, 0: correct, wrong, wrong
    monkeypatch.setattr(
        _unsupervised, "_importance", lambda s, t: np.array([3, 1, 1.0])
    )
    score = sktransfer.importance_weighted_scorer(est, X, y)
    assert score == pytest.approx(3 / 5)


def test_importance_weighted_is_accuracy_without_shift():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    X = np.vstack([X, X])  # the unlabelled rows are the labelled rows again
    y = np.r_[(X[:40, 0] > 0).astype(int), -np.ones(40, int)]

    class Sign(ClassifierMixin, BaseEstimator):
        classes_ = np.array([0, 1])

        def predict(self, X):
            return (X[:, 1] > 0).astype(int)

    est = Sign()
    plain = accuracy_score(y[:40], est.predict(X[:40]))
    assert sktransfer.importance_weighted_scorer(est, X, y) == pytest.approx(
        plain, abs=1e-6
    )


def test_importance_weighted_follows_the_target():
    # Source rows at x=0 (all predicted wrong) and x=1 (all right); the
    # target lies near x=1, so the weighted accuracy is far above the plain 0.5.
    X = np.r_[np.zeros(20), np.ones(20), np.ones(20) + 0.1][:, None]
    y = np.r_[np.zeros(20, int), np.ones(20, int), -np.ones(20, int)]

    class One(ClassifierMixin, BaseEstimator):
        classes_ = np.array([0, 1])

        def predict(self, X):
            return np.ones(len(X), int)

    assert sktransfer.importance_weighted_scorer(One(), X, y) > 0.8


def test_deep_embedded_validation_on_hand_made_weights(monkeypatch):
    proba = np.array([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    est = Fixed(proba, features=np.arange(10.0).reshape(5, 2))
    X = np.arange(5)[:, None]
    y = np.array([0, 0, 1, -1, -1])
    w = np.array([2.0, 1.0, 0.5])
    monkeypatch.setattr(_unsupervised, "_importance", lambda s, t: w)
    loss = -np.log([0.8, 0.4, 0.5])
    weighted = w * loss
    eta = -np.cov(weighted, w)[0, 1] / np.var(w, ddof=1)
    risk = weighted.mean() + eta * w.mean() - eta
    assert sktransfer.deep_embedded_validation_scorer(est, X, y) == pytest.approx(-risk)
    # Equal weights: no control variate, the mean log-loss.
    monkeypatch.setattr(_unsupervised, "_importance", lambda s, t: np.ones(3))
    assert sktransfer.deep_embedded_validation_scorer(est, X, y) == pytest.approx(
        -loss.mean()
    )


def test_scorers_need_both_kinds_of_row():
    est = Fixed(np.full((3, 2), 0.5))
    X = np.arange(3)[:, None]
    with pytest.raises(ValueError, match="Both kinds are needed"):
        sktransfer.importance_weighted_scorer(est, X, np.array([0, 1, 0]))
    with pytest.raises(TypeError, match="no predict_proba"):
        sktransfer.prediction_entropy_scorer(BaseEstimator(), X)
