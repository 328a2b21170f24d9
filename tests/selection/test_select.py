"""The linear probe with a cross-validated L2 strength, and make_transfer_search."""

import warnings

import numpy as np
import pytest
from nets import tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler

from sktransfer import (
    TransferClassifier,
    TransferRegressor,
    linear_probe,
    make_transfer_search,
)
from sktransfer._selection import _select
from sktransfer._selection._select import _CS


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained classifier (clone it before fitting)."""
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


def hidden(X, state):
    """The default MLP's hidden layer by hand: relu(X W^T + b)."""
    W = state["features.1.weight"].numpy().astype(np.float64)
    b = state["features.1.bias"].numpy().astype(np.float64)
    return np.maximum(X.astype(np.float64) @ W.T + b, 0)


def best_C_by_hand(Z, y, n_splits):
    """The C of the grid with the lowest mean held-out log-loss, by hand."""
    folds = list(StratifiedKFold(n_splits).split(Z, y))
    losses = []
    for C in _CS:
        fold_losses = []
        for train, test in folds:
            model = LogisticRegression(C=C, max_iter=1000).fit(Z[train], y[train])
            proba = model.predict_proba(Z[test])
            fold_losses.append(log_loss(y[test], proba, labels=model.classes_))
        losses.append(np.mean(fold_losses))
    return _CS[int(np.argmin(losses))]


@pytest.mark.parametrize("per_class", [10, 2])
def test_linear_probe_picks_the_C_with_the_lowest_held_out_log_loss(
    pretrained, digits, per_class
):
    # With 2 labels per class there are 2 inner folds instead of 3.
    take = np.concatenate(
        [np.flatnonzero(digits.y_target == c)[:per_class] for c in range(5, 10)]
    )
    X, y = digits.X_target[take], digits.y_target[take]
    probe = linear_probe(pretrained).fit(X, y)
    Z = StandardScaler().fit_transform(hidden(X, pretrained.source_weights_))
    C = best_C_by_hand(Z, y, n_splits=min(3, per_class))
    assert probe[-1].C_ == pytest.approx(C)
    # Chosen by log-loss, scored by accuracy as every classifier.
    assert probe.score(X, y) == np.mean(probe.predict(X) == y)
    by_hand = LogisticRegression(C=C, max_iter=1000).fit(Z, y)
    Z_test = StandardScaler().fit(hidden(X, pretrained.source_weights_))
    Z_test = Z_test.transform(hidden(digits.X_test[:50], pretrained.source_weights_))
    np.testing.assert_allclose(
        probe.predict_proba(digits.X_test[:50]),
        by_hand.predict_proba(Z_test),
        atol=1e-2,  # lbfgs stops at tol=1e-4, from another start
    )


def test_linear_probe_of_a_regressor_is_ridge_with_alpha_chosen_by_loo():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    y = (X @ rng.normal(size=6)).astype(np.float32)
    reg = TransferRegressor(tiny_regressor_net(), random_state=0).fit_source(X, y)
    probe = linear_probe(reg).fit(X[:30], y[:30])
    Z = StandardScaler().fit_transform(hidden(X[:30], reg.source_weights_))
    alphas = probe[-1].alphas
    # Leave-one-out squared error of each alpha, by hand.
    loo = [
        np.mean(
            [
                (
                    Ridge(alpha=a)
                    .fit(np.delete(Z, i, 0), np.delete(y[:30], i))
                    .predict(Z[i : i + 1])[0]
                    - y[i]
                )
                ** 2
                for i in range(30)
            ]
        )
        for a in alphas
    ]
    assert probe[-1].alpha_ == pytest.approx(alphas[int(np.argmin(loo))])


def test_linear_probe_refuses_what_it_cannot_probe(digits):
    with pytest.raises(TypeError, match="got LogisticRegression"):
        linear_probe(LogisticRegression())
    with pytest.raises(ValueError, match="needs pretrained weights.*fit_source"):
        linear_probe(TransferClassifier(tiny_classifier_net()))


def test_transfer_search_scores_each_candidate_as_cross_val_score_does(
    pretrained, digits
):
    X, y = digits.X_target, digits.y_target
    search = make_transfer_search(pretrained, frozen=[()], cv=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    assert search.scoring is _select._neg_log_loss
    params = search.cv_results_["params"]
    assert params[0] == {"model__frozen": ()}
    scratch, probe = params[1]["model"], params[2]["model"]
    assert scratch.pretrained is False
    assert isinstance(probe, LogisticRegressionCV)
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    scores = search.cv_results_["mean_test_score"]
    expected = {
        1: clone(pretrained).set_params(pretrained=False),
        2: linear_probe(pretrained),
    }
    for i, model in expected.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_hand = cross_val_score(model, X, y, cv=cv, scoring="neg_log_loss")
        # Every test fold holds every class here: the same as scikit-learn's.
        assert scores[i] == pytest.approx(by_hand.mean(), rel=1e-5)
    assert search.best_index_ == int(np.argmax(scores))
    chosen = search.best_estimator_[-1]
    assert type(chosen) is type(params[search.best_index_].get("model", pretrained))


def test_transfer_search_defaults_and_switches(pretrained):
    frozen = clone(pretrained).set_params(frozen="features.*")
    search = make_transfer_search(frozen, scratch=False, probe=False)
    assert search.param_grid == [{"model__frozen": [(), "features.*"]}]
    assert isinstance(search.cv, StratifiedKFold)
    assert search.cv.n_splits == 5
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit_source(X, X[:, 0])
    search = make_transfer_search(reg)
    assert search.scoring == "neg_mean_squared_error"
    assert type(search.param_grid[2]["model"][0]).__name__ == "RidgeCV"
    assert search.cv.__class__.__name__ == "KFold"


def test_transfer_search_refuses_bad_frozen_lists(pretrained):
    with pytest.raises(ValueError, match=r"non-empty list.*got 'features\.\*'"):
        make_transfer_search(pretrained, frozen="features.*")
    with pytest.raises(ValueError, match=r"non-empty list.*got \[\]"):
        make_transfer_search(pretrained, frozen=[])


def test_transfer_search_uses_fewer_folds_when_classes_are_smaller(pretrained, digits):
    take = np.concatenate(
        [np.flatnonzero(digits.y_target == c)[:2] for c in range(5, 10)]
    )
    X, y = digits.X_target[take], digits.y_target[take]
    # Each training fold holds one label per class, which the probe refuses:
    # that is now an error, where the search used to score the probe NaN.
    search = make_transfer_search(pretrained, scratch=False, cv=5, random_state=0)
    with pytest.raises(ValueError, match="needs 2 samples of some class"):
        search.fit(X, y)
    search = make_transfer_search(
        pretrained, scratch=False, probe=False, cv=5, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    assert search.n_splits_ == 2
    expected = StratifiedKFold(2, shuffle=True, random_state=0).split(X, y)
    for (train, test), (train_, test_) in zip(
        search.cv.split(X, y), expected, strict=True
    ):
        np.testing.assert_array_equal(train, train_)
        np.testing.assert_array_equal(test, test_)


def test_linear_probe_with_one_label_per_class_says_it_needs_two(pretrained, digits):
    take = [np.flatnonzero(digits.y_target == c)[0] for c in range(5, 10)]
    probe = linear_probe(pretrained)
    with pytest.raises(ValueError, match="needs 2 samples of some class.*5 classes"):
        probe.fit(digits.X_target[take], digits.y_target[take])


def test_transfer_search_scores_test_folds_missing_a_class(pretrained, digits):
    # 6/6/6/2 labels and 5 folds: some test folds lack the rare class, where
    # scikit-learn's "neg_log_loss" fails and every candidate would score NaN.
    take = np.concatenate(
        [
            np.flatnonzero(digits.y_target == c)[:n]
            for c, n in zip((5, 6, 7, 8), (6, 6, 6, 2), strict=True)
        ]
    )
    X, y = digits.X_target[take], digits.y_target[take]
    search = make_transfer_search(
        pretrained, frozen=[()], probe=False, cv=5, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    scores = search.cv_results_["split0_test_score"]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    # Each fold's score is minus the log-loss over all fitted classes, by hand.
    train, test = next(iter(search.cv.split(X, y)))
    for i, params in enumerate(search.cv_results_["params"]):
        model = clone(search.estimator).set_params(**params).fit(X[train], y[train])
        proba = model.predict_proba(X[test])
        by_hand = -log_loss(y[test], proba, labels=model.classes_)
        assert scores[i] == pytest.approx(by_hand, rel=1e-5)


def test_transfer_search_refuses_a_frozen_pattern_that_matches_nothing(pretrained):
    # A typo would otherwise only fail that candidate's fits (a FitFailedWarning)
    # and leave the search choosing among the others.
    with pytest.raises(ValueError, match=r"pattern 'feature\.\*' matches no tensor"):
        make_transfer_search(pretrained, frozen=[(), "feature.*"])
    names = list(pretrained.source_weights_)
    search = make_transfer_search(pretrained, frozen=[(), names[0]])
    assert search.param_grid[0] == {"model__frozen": [(), names[0]]}


def test_linear_probe_weighs_classes_as_the_estimator_does(pretrained, digits):
    # A search compares the probe with fine-tuning: both must weigh the classes
    # alike, or class_weight="balanced" would silently favour one of them.
    take = np.concatenate(
        [
            np.flatnonzero(digits.y_target == c)[:n]
            for c, n in zip((5, 6, 7), (12, 6, 3), strict=True)
        ]
    )
    X, y = digits.X_target[take], digits.y_target[take]
    balanced = clone(pretrained).set_params(class_weight="balanced")
    probe = linear_probe(balanced).fit(X, y)
    assert probe[-1].class_weight == "balanced"
    Z = StandardScaler().fit_transform(hidden(X, pretrained.source_weights_))
    by_hand = LogisticRegression(
        C=probe[-1].C_, class_weight="balanced", max_iter=1000
    ).fit(Z, y)
    plain = LogisticRegression(C=probe[-1].C_, max_iter=1000).fit(Z, y)
    # Equal to the weighted fit up to the solvers' tolerance (float32 features
    # in the probe), and ten times farther from the unweighted one.
    off = np.abs(probe[-1].coef_ - by_hand.coef_).max()
    assert off < 0.01 * np.abs(by_hand.coef_).max()
    assert off < 0.1 * np.abs(plain.coef_ - by_hand.coef_).max()
