"""Pretrained weights through clone, pickle, joblib, pipelines and searches."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from nets import tiny_classifier_net
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sktransfer import TransferClassifier, fit_source


@pytest.fixture(scope="module")
def pretrained(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


def test_clone_keeps_the_pretrained_weights_but_not_the_fit(pretrained, digits):
    fitted = clone(pretrained).fit(digits.X_target, digits.y_target)
    twin = clone(fitted)
    assert twin.source_weights_ is pretrained.source_weights_
    assert not hasattr(twin, "net_")
    assert twin.get_params()["net"] is not fitted.net  # the template is cloned


def test_pickle_round_trip_keeps_pretrained_and_fitted_state(pretrained, digits):
    fitted = clone(pretrained).fit(digits.X_target, digits.y_target)
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        loaded.predict_proba(digits.X_test), fitted.predict_proba(digits.X_test)
    )
    for key, value in fitted.source_weights_.items():
        assert torch.equal(loaded.source_weights_[key], value)
    refit = loaded.fit(digits.X_target, digits.y_target)
    np.testing.assert_array_equal(
        refit.predict(digits.X_test), fitted.predict(digits.X_test)
    )


def features_are_source(estimator, X, y):
    """Scorer: 1.0 when the fitted candidate's features equal the source weights."""
    state = estimator.net_.module_.state_dict()
    source = estimator.source_weights_
    keys = ("features.1.weight", "features.1.bias")
    return float(all(torch.equal(state[key], source[key]) for key in keys))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_fine_tunes_every_candidate_from_the_source(
    pretrained, digits, n_jobs
):
    frozen_options = [(), "features.*", ("features.1.weight", "features.1.bias")]
    grid = GridSearchCV(
        pretrained,
        {"frozen": frozen_options, "net__lr": [0.01, 0.001]},
        scoring={"accuracy": "accuracy", "kept": features_are_source},
        refit="accuracy",
        cv=StratifiedKFold(3),
        n_jobs=n_jobs,
    )
    grid.fit(digits.X_target, digits.y_target)
    assert np.isfinite(grid.cv_results_["mean_test_accuracy"]).all()
    # In every fold, frozen candidates hold the source features exactly, and
    # candidates that fine-tune everything moved away from them.
    for params, kept in zip(
        grid.cv_results_["params"], grid.cv_results_["mean_test_kept"], strict=True
    ):
        assert kept == (1.0 if params["frozen"] else 0.0)
    best = grid.best_estimator_
    for key, value in pretrained.source_weights_.items():
        assert torch.equal(best.source_weights_[key], value)
    assert features_are_source(best, None, None) == (1.0 if best.frozen else 0.0)
    # Searching never pretrains again: the history is the one from fit_source.
    assert best.source_history_ == pretrained.source_history_


def test_randomized_search_and_joblib_workers_keep_the_weights(pretrained, digits):
    search = RandomizedSearchCV(
        pretrained.set_params(frozen="features.*"),
        {"net__lr": [0.02, 0.01, 0.005]},
        n_iter=2,
        cv=2,
        n_jobs=2,
        random_state=0,
    ).fit(digits.X_target, digits.y_target)
    assert features_are_source(search.best_estimator_, None, None) == 1.0
    pretrained.set_params(frozen=())

    def fine_tune(estimator):
        return estimator.fit(digits.X_target, digits.y_target).net_.module_.state_dict()

    frozen = clone(pretrained).set_params(frozen="features.*")
    states = joblib.Parallel(n_jobs=2)(
        joblib.delayed(fine_tune)(clone(frozen)) for _ in range(2)
    )
    for state in states:
        for key in ("features.1.weight", "features.1.bias"):
            assert torch.equal(state[key], pretrained.source_weights_[key])


def test_cross_val_score_on_a_pipeline_pretrained_through_it(digits):
    pipe = make_pipeline(
        StandardScaler(),
        TransferClassifier(tiny_classifier_net(), frozen="features.*", random_state=0),
    )
    assert fit_source(pipe, digits.X_source, digits.y_source) is pipe
    clf = pipe[-1]
    assert hasattr(clf, "source_weights_")
    # The pipeline keeps the scaler fitted on the source, also in its clones.
    np.testing.assert_allclose(pipe[0].mean_, digits.X_source.mean(axis=0))
    assert clone(pipe)[0] is pipe[0]
    scores = cross_val_score(pipe, digits.X_target, digits.y_target, cv=3)
    # Each fold fine-tunes on the target scaled with the source's statistics.
    by_hand = make_pipeline(
        FrozenEstimator(StandardScaler().fit(digits.X_source)), clone(clf)
    )
    expected = cross_val_score(by_hand, digits.X_target, digits.y_target, cv=3)
    np.testing.assert_array_equal(scores, expected)


def test_pretraining_sees_the_source_through_the_transformers(digits):
    def double(X):
        return np.hstack([X, X])

    pipe = make_pipeline(
        FunctionTransformer(double),
        TransferClassifier(tiny_classifier_net(), random_state=0),
    )
    fit_source(pipe, digits.X_source, digits.y_source)
    assert pipe[-1].source_weights_["features.1.weight"].shape == (16, 128)
    pipe.fit(digits.X_target, digits.y_target)
    # The same as pretraining and fine-tuning on the transformed data by hand.
    by_hand = TransferClassifier(tiny_classifier_net(), random_state=0)
    by_hand.fit_source(double(digits.X_source), digits.y_source)
    by_hand.fit(double(digits.X_target), digits.y_target)
    np.testing.assert_array_equal(
        pipe.predict_proba(digits.X_test),
        by_hand.predict_proba(double(digits.X_test)),
    )


def test_fit_source_needs_a_transfer_estimator(digits):
    with pytest.raises(TypeError, match="ending in one; got StandardScaler"):
        fit_source(make_pipeline(StandardScaler()), digits.X_source, digits.y_source)
