"""Every route to the pretrained weights, every tool; pipelines; weights are weights.

Issue 18, cases 8, 9 and 11 (second residual), and the statistics of the
linear probe and of ``class_weight="balanced"`` that must see ``sample_weight``.
"""

import warnings

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net
from sklearn.base import clone
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from sktransfer import (
    MLP,
    PretrainedFeatures,
    TransferClassifier,
    compare_transfer,
    fit_source,
    linear_probe,
    make_transfer_search,
)
from sktransfer._estimators._pipeline import WeightedPipeline

ROUTES = ["fit_source", "file", "state_dict", "module", "estimator", "net=module"]


@pytest.fixture(scope="module")
def source(digits):
    """The weights pretrained once; every route below reaches these."""
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source[:300], digits.y_source[:300])


def trained_module(state):
    module = MLP(64, 5, hidden_layer_sizes=(16,))
    module.load_state_dict(state)
    return module


def by_route(route, source, tmp_path):
    """Return a fresh estimator holding ``source``'s weights, reached by ``route``."""
    fresh = TransferClassifier(tiny_classifier_net(), random_state=0)
    state = source.source_weights_
    if route == "fit_source":
        return clone(source)
    if route == "file":
        path = tmp_path / "source.pt"
        source.save_source(path)
        return fresh.load_source(path)
    if route == "state_dict":
        return fresh.load_source(state)
    if route == "module":
        return fresh.load_source(trained_module(state))
    if route == "estimator":
        return fresh.load_source(source)
    # A module instance holding the trained weights as the template's module.
    net = tiny_classifier_net(trained_module(state))
    return TransferClassifier(net, random_state=0)


def hidden(X, state):
    """The MLP's hidden layer by hand: relu(X W^T + b), in float64."""
    W = state["features.1.weight"].numpy().astype(np.float64)
    b = state["features.1.bias"].numpy().astype(np.float64)
    return np.maximum(X.astype(np.float64) @ W.T + b, 0)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        # Three epochs do not converge; the scratch baseline's warnings.
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------- case 8: every route, every tool


@pytest.mark.parametrize("route", ROUTES)
def test_pretrained_features_by_every_route(route, source, digits, tmp_path):
    X = digits.X_target
    features = PretrainedFeatures(by_route(route, source, tmp_path)).fit(X)
    Z = features.transform(X)
    np.testing.assert_allclose(Z, hidden(X, source.source_weights_), atol=1e-5)
    reference = PretrainedFeatures(clone(source)).fit(X).transform(X)
    np.testing.assert_array_equal(Z, reference)


@pytest.mark.parametrize("route", ROUTES)
def test_linear_probe_by_every_route(route, source, digits, tmp_path):
    X, y = digits.X_target, digits.y_target
    probe = linear_probe(by_route(route, source, tmp_path)).fit(X, y)
    reference = linear_probe(clone(source)).fit(X, y)
    np.testing.assert_array_equal(probe[-1].coef_, reference[-1].coef_)
    np.testing.assert_array_equal(probe[-1].C_, reference[-1].C_)


@pytest.mark.parametrize("route", ROUTES)
def test_fit_by_every_route_is_bit_identical(route, source, digits, tmp_path):
    # Case 11: the head's initial weights depend on random_state and its shape
    # only, so the whole fit is the same whatever route the weights took.
    X, y = digits.X_target, digits.y_target
    fitted = quiet(by_route(route, source, tmp_path).fit, X, y)
    reference = quiet(clone(source).fit, X, y)
    ours = fitted.net_.module_.state_dict()
    theirs = reference.net_.module_.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    np.testing.assert_array_equal(fitted.predict_proba(X), reference.predict_proba(X))


def test_head_initialisation_depends_on_random_state(source, digits):
    # The head is drawn from random_state: another seed, another head.
    X, y = digits.X_target, digits.y_target
    one = clone(source).set_params(net__max_epochs=1, random_state=1)
    two = clone(source).set_params(net__max_epochs=1, random_state=2)
    head = [quiet(est.fit, X, y).net_.module_.head.weight for est in (one, two)]
    assert not torch.equal(*head)


@pytest.fixture(scope="module")
def comparison(source, digits):
    """compare_transfer on the fit_source route, the reference of the others."""
    X, y = digits.X_target, digits.y_target
    return quiet(compare_transfer, clone(source), X, y, cv=2, random_state=0)


@pytest.fixture(scope="module")
def search(source, digits):
    """make_transfer_search fitted on the fit_source route."""
    search = make_transfer_search(clone(source), scratch=False, cv=2, random_state=0)
    return quiet(search.fit, digits.X_target, digits.y_target)


@pytest.mark.parametrize("route", ["state_dict", "module"])
def test_compare_transfer_by_every_route(route, source, comparison, digits, tmp_path):
    X, y = digits.X_target, digits.y_target
    estimator = by_route(route, source, tmp_path)
    ours = quiet(compare_transfer, estimator, X, y, cv=2, random_state=0)
    assert list(ours.scores) == ["scratch", "transfer", "linear probe"]
    for name, scores in comparison.scores.items():
        np.testing.assert_array_equal(ours.scores[name], scores)


@pytest.mark.parametrize("route", ["state_dict", "module"])
def test_transfer_search_by_every_route(route, source, search, digits, tmp_path):
    X, y = digits.X_target, digits.y_target
    estimator = by_route(route, source, tmp_path)
    ours = make_transfer_search(estimator, scratch=False, cv=2, random_state=0)
    quiet(ours.fit, X, y)
    scores = ours.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()  # the probe candidate scored, not NaN
    np.testing.assert_array_equal(scores, search.cv_results_["mean_test_score"])
    assert ours.best_index_ == search.best_index_


def test_failed_search_candidate_is_an_error(source, digits):
    # Two labels per class and two folds: the probe's own inner
    # cross-validation refuses one label per class, the fine-tuning candidates
    # train. Scored NaN, the probe would drop out of the choice without a word.
    y = digits.y_target
    take = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(5, 10)])
    X, y = digits.X_target[take], y[take]
    search = make_transfer_search(clone(source), scratch=False, cv=2, random_state=0)
    assert search.error_score == "raise"
    with pytest.raises(ValueError, match="needs 2 samples of some class"):
        quiet(search.fit, X, y)
    # A number keeps scikit-learn's behaviour, with its warning.
    search = make_transfer_search(
        clone(source), scratch=False, cv=2, random_state=0, error_score=-1.0
    )
    with pytest.warns(FitFailedWarning, match="needs 2 samples"):
        search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert scores[-1] == -1.0
    assert np.isfinite(scores).all()


# ----------------------------------------- case 9: pipelines, whatever their names


@pytest.fixture(scope="module")
def pipe(digits):
    """A pipeline pretrained through sktransfer.fit_source (its scaler frozen)."""
    estimator = make_pipeline(
        StandardScaler(), TransferClassifier(tiny_classifier_net(), random_state=0)
    )
    return fit_source(estimator, digits.X_source[:300], digits.y_source[:300])


def renamed(pipeline, names):
    return Pipeline(
        [
            (name, clone(step))
            for name, (_, step) in zip(names, pipeline.steps, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def pipe_comparison(pipe, digits):
    X, y = digits.X_target, digits.y_target
    return quiet(compare_transfer, pipe, X, y, cv=2, random_state=0)


def test_compare_transfer_on_a_pipeline(pipe, pipe_comparison, digits):
    X, y = digits.X_target, digits.y_target
    assert list(pipe_comparison.scores) == ["scratch", "transfer", "linear probe"]
    # The probe is the pipeline's scaler, then the pretrained features.
    transfer = pipe[-1]
    Z = hidden(pipe[0].transform(X), transfer.source_weights_)
    probe = linear_probe(transfer).fit(pipe[0].transform(X), y)
    np.testing.assert_allclose(probe[1].mean_, Z.mean(axis=0), atol=1e-5)


@pytest.mark.parametrize(
    "names",
    [
        ("pretrainedfeatures", "probe"),
        ("standardscaler", "pretrainedfeatures"),
    ],
)
def test_compare_transfer_on_steps_named_like_its_own(
    names, pipe, pipe_comparison, digits
):
    X, y = digits.X_target, digits.y_target
    ours = quiet(compare_transfer, renamed(pipe, names), X, y, cv=2, random_state=0)
    # The names change nothing: also the last step named "probe" is seeded.
    for name, scores in pipe_comparison.scores.items():
        np.testing.assert_array_equal(ours.scores[name], scores)


def test_compare_transfer_refuses_clashing_names_before_any_fit(pipe, digits):
    clash = renamed(pipe, ("step", "step"))
    transfer = clash[-1]
    with pytest.raises(ValueError, match=r"step names \['step', 'step'\].*repeated"):
        compare_transfer(clash, digits.X_target, digits.y_target, cv=2)
    assert not hasattr(transfer, "net_")


# ------------------------------------------------------ weights are weights


def zero_weighted(digits):
    """Target rows with the 7th row weighing 0, and a copy of X and y where
    that row is changed (features and label, to another present class)."""
    X, y = digits.X_target, digits.y_target
    w = np.linspace(0.5, 2.0, len(y))
    row = 7
    w[row] = 0.0
    X2, y2 = X.copy(), y.copy()
    X2[row] = X2[row][::-1] * 3
    y2[row] = 5 if y[row] != 5 else 6
    return X, y, X2, y2, w, row


def test_linear_probe_weighs_its_standardisation(source, digits):
    X, y, X2, _, w, _ = zero_weighted(digits)
    probe = linear_probe(clone(source)).fit(X, y, sample_weight=w)
    Z = hidden(X, source.source_weights_)
    np.testing.assert_allclose(
        probe[1].mean_, np.average(Z, axis=0, weights=w), atol=1e-5
    )
    # A row of weight 0 changes nothing the probe learns (same y: its folds).
    moved = linear_probe(clone(source)).fit(X2, y, sample_weight=w)
    np.testing.assert_allclose(moved[1].mean_, probe[1].mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved[-1].coef_, probe[-1].coef_, rtol=0, atol=1e-12)


def test_balanced_class_weight_counts_weighted_samples(source, digits):
    X, y, _, y2, w, _ = zero_weighted(digits)
    net = tiny_classifier_net(max_epochs=2)
    balanced = TransferClassifier(net, class_weight="balanced", random_state=0)
    balanced.load_source(source)
    classes = np.unique(y)
    per_class = compute_class_weight("balanced", classes=classes, y=y, sample_weight=w)
    by_hand = w * per_class[np.searchsorted(classes, y)]
    plain = TransferClassifier(net, random_state=0).load_source(source)
    ours = quiet(clone(balanced).fit, X, y, sample_weight=w)
    theirs = quiet(plain.fit, X, y, sample_weight=by_hand)
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    # Moving the zero-weighted row to another class changes nothing.
    moved = quiet(clone(balanced).fit, X, y2, sample_weight=w)
    np.testing.assert_array_equal(moved.predict_proba(X), ours.predict_proba(X))


def test_early_stopping_validation_ignores_zero_weighted_rows(source, digits):
    X, y, X2, _, w, _ = zero_weighted(digits)
    net = tiny_classifier_net(max_epochs=4)
    clf = TransferClassifier(
        net, early_stopping=True, validation_fraction=0.3, random_state=0
    ).load_source(source)
    ours = quiet(clone(clf).fit, X, y, sample_weight=w)
    moved = quiet(clone(clf).fit, X2, y, sample_weight=w)
    np.testing.assert_array_equal(
        ours.net_.history[:, "valid_loss"], moved.net_.history[:, "valid_loss"]
    )
    np.testing.assert_array_equal(ours.predict_proba(X), moved.predict_proba(X))


def test_transfer_search_weighs_every_candidate(source, digits):
    # Variant: search.fit(X, y, sample_weight=w) reaches every candidate, and
    # the probe candidate standardises with the weights too.
    X, y, _, _, w, _ = zero_weighted(digits)
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    search = make_transfer_search(clone(source), scratch=False, cv=folds)
    search.set_params(refit=False)
    quiet(search.fit, X, y, sample_weight=w)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    probe = {key: value[0] for key, value in search.param_grid[-1].items()}
    candidate = clone(search.estimator).set_params(**probe)
    candidate.fit(X, y, sample_weight=w)
    Z = hidden(X, source.source_weights_)
    np.testing.assert_allclose(
        candidate.named_steps["scaler"].mean_,
        np.average(Z, axis=0, weights=w),
        atol=1e-5,
    )


def test_weighted_pipeline_under_metadata_routing(source, digits):
    # With scikit-learn's routing on, the probe routes by each step's request.
    import sklearn

    X, y, X2, _, w, _ = zero_weighted(digits)
    with sklearn.config_context(enable_metadata_routing=True):
        probe = linear_probe(clone(source))
        probe[1].set_fit_request(sample_weight=True)
        probe[2].set_fit_request(sample_weight=True)
        scorer = get_scorer("neg_log_loss").set_score_request(sample_weight=True)
        probe[2].set_params(scoring=scorer)
        probe.fit(X, y, sample_weight=w)
    Z = hidden(X, source.source_weights_)
    np.testing.assert_allclose(
        probe[1].mean_, np.average(Z, axis=0, weights=w), atol=1e-5
    )


def test_weighted_pipeline_leaves_weightless_steps_alone(digits):
    X = digits.X_target
    w = np.zeros(len(X))
    w[:10] = 1.0
    pipe = WeightedPipeline([("f", FunctionTransformer()), ("s", StandardScaler())])
    pipe.fit(X, sample_weight=w)  # FunctionTransformer takes no weights
    np.testing.assert_allclose(pipe[-1].mean_, X[:10].mean(axis=0), atol=1e-6)


def test_compare_transfer_weighs_every_setting(pipe, digits):
    # Variant: compare_transfer(sample_weight=w) trains each setting on its
    # fold's weights, a pipeline's scaler included; scored unweighted.
    X, y, _, _, w, _ = zero_weighted(digits)
    result = quiet(compare_transfer, pipe, X, y, cv=2, random_state=0, sample_weight=w)
    folds = StratifiedKFold(2, shuffle=True, random_state=0).split(X, y)
    expected = []
    for train, test in folds:
        model = clone(pipe).set_params(transferclassifier__random_state=0)
        quiet(model.fit, X[train], y[train], transferclassifier__sample_weight=w[train])
        expected.append(model.score(X[test], y[test]))
    np.testing.assert_array_equal(result.scores["transfer"], expected)
    assert result.scores["linear probe"].shape == (2,)


def test_features_of_a_state_dict_for_a_fixed_width_module_class(digits):
    # Variant: a module class that does not take n_outputs (a fixed 10-wide
    # output) and weights from a state dict: the features are its body's.
    from nets import FixedOutputNet

    torch.manual_seed(3)
    trained = FixedOutputNet()
    net = tiny_classifier_net(FixedOutputNet)
    clf = TransferClassifier(net, head="out").load_source(trained.state_dict())
    X = digits.X_target
    Z = PretrainedFeatures(clf).fit(X).transform(X)
    with torch.no_grad():
        expected = trained.body(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(Z, expected, atol=1e-6)
    probe = linear_probe(clf).fit(X, digits.y_target)
    assert probe.score(X, digits.y_target) > 0.5


def test_regressor_probe_by_state_dict_and_zero_weighted_rows(digits):
    # Variant: the regressor's probe (RidgeCV) on weights from a state dict,
    # its standardisation and ridge weighted: a zero-weighted row's features
    # and target change nothing.
    from nets import tiny_regressor_net

    from sktransfer import TransferRegressor

    rng = np.random.RandomState(0)
    Xs, Xt = digits.X_source[:200], digits.X_target
    ys, yt = Xs[:, 20] - Xs[:, 43], Xt[:, 20] + Xt[:, 30]
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg = quiet(reg.fit_source, Xs, ys)
    loaded = TransferRegressor(tiny_regressor_net()).load_source(reg.source_weights_)
    w = rng.uniform(0.5, 2, len(yt))
    w[3] = 0.0
    ours = linear_probe(loaded).fit(Xt, yt, sample_weight=w)
    theirs = linear_probe(reg).fit(Xt, yt, sample_weight=w)
    np.testing.assert_array_equal(ours[-1].coef_, theirs[-1].coef_)
    X2, y2 = Xt.copy(), yt.copy()
    X2[3], y2[3] = 1.0, 100.0
    moved = linear_probe(loaded).fit(X2, y2, sample_weight=w)
    np.testing.assert_allclose(moved[1].mean_, ours[1].mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved[-1].coef_, ours[-1].coef_, rtol=0, atol=1e-12)
    assert moved[-1].alpha_ == ours[-1].alpha_


def test_a_setting_for_a_pipeline_is_told_to_name_the_step(pipe, digits):
    X, y = digits.X_target, digits.y_target
    step = pipe.steps[-1][0]
    with pytest.raises(ValueError, match=rf"'{step}__frozen'"):
        compare_transfer(pipe, X, y, cv=2, settings={"f": {"frozen": "0.*"}})
