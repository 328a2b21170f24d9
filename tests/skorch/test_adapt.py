"""Unlabelled target rows: adaptation terms, self-training and unsupervised scorers."""

import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.utils.class_weight import compute_sample_weight
from torch import nn

import sktransfer
from sktransfer import TransferClassifier, TransferRegressor
from sktransfer._skorch import _adapt, _adapt_terms

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def shifted():
    """120 labelled source rows, 60 unlabelled target rows shifted by +1.5."""
    X, y = make_classification(
        180, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    X[120:] += 1.5
    y_marked = y.copy()
    y_marked[120:] = -1
    return X, y, y_marked


class Tiny(nn.Module):
    """A body and an output layer, no randomness in forward."""

    def __init__(self, n_in=6, n_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 8), nn.Tanh())
        self.out = nn.Linear(8, n_out)

    def forward(self, X):
        return self.out(self.body(X))


def _one_batch(method, weight, X, y_marked, **kwargs):
    """Fit one epoch of one full batch from a known module; return it and the loss."""
    torch.manual_seed(1)
    module = Tiny()
    net = tiny_classifier_net(module, max_epochs=1, batch_size=len(X))
    clf = TransferClassifier(
        net, head=None, adapt=method, adapt_weight=weight, adapt_layer="body", **kwargs
    )
    clf.fit(X, y_marked)
    return module, clf.net_.history[0, "train_loss"]


# ------------------------------------------------------------- the terms


def test_coral_equals_hand_computation():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(7, 4)), rng.normal(size=(5, 4)) * 2

    def covariance(D):  # Sun & Saenko 2016, eq. 2
        n = len(D)
        ones = np.ones((1, n))
        return (D.T @ D - (ones @ D).T @ (ones @ D) / n) / (n - 1)

    d = 4
    expected = ((covariance(source) - covariance(target)) ** 2).sum() / (4 * d * d)
    got = _adapt_terms.coral_loss(torch.tensor(source), torch.tensor(target))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_mmd_equals_hand_computation():
    rng = np.random.default_rng(1)
    source, target = rng.normal(size=(4, 3)), rng.normal(size=(3, 3)) + 1
    rows = np.vstack([source, target])
    sq = np.array([[((a - b) ** 2).sum() for b in rows] for a in rows])
    base = sq.mean()

    def k(a, b):
        dist = ((a - b) ** 2).sum()
        return sum(np.exp(-dist / (2 * m * base)) for m in (0.25, 0.5, 1, 2, 4))

    def mean_k(A, B):
        return np.mean([[k(a, b) for b in B] for a in A])

    expected = (
        mean_k(source, source) + mean_k(target, target) - 2 * mean_k(source, target)
    )
    got = _adapt_terms.mmd_loss(torch.tensor(source), torch.tensor(target))
    assert float(got) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(("method", "weight"), [("coral", 300.0), ("mmd", 3.0)])
def test_training_loss_is_supervised_plus_weighted_term(shifted, method, weight):
    # One batch, one epoch from known weights: the recorded loss is the
    # labelled rows' cross-entropy plus the weight times the term at "body".
    X, y, y_marked = shifted
    torch.manual_seed(1)
    module = Tiny()
    with torch.no_grad():
        features = module.body(torch.as_tensor(X))
        logits = module.out(features)
    labelled = torch.as_tensor(y_marked != -1)
    ce = nn.functional.cross_entropy(logits[labelled], torch.as_tensor(y)[labelled])
    term = getattr(_adapt_terms, f"{method}_loss")(
        features[labelled], features[~labelled]
    )
    _, loss = _one_batch(method, weight, X, y_marked)
    assert float(weight * term) > 0.1  # visible beside the cross-entropy
    assert loss == pytest.approx(float(ce + weight * term), rel=1e-5)


def test_gradient_reversal_flips_the_domain_gradient_on_shared_layers():
    torch.manual_seed(0)
    shared = nn.Linear(4, 5)
    classifier = _adapt_terms.DomainClassifier(5)
    source, target = torch.randn(6, 4), torch.randn(3, 4) + 1

    def grads(reverse):
        shared.zero_grad()
        classifier.zero_grad()
        loss = _adapt_terms.domain_loss(
            classifier(shared(source), reverse=reverse),
            classifier(shared(target), reverse=reverse),
        )
        loss.backward()
        return (
            [p.grad.clone() for p in shared.parameters()],
            [p.grad.clone() for p in classifier.parameters()],
        )

    shared_plain, domain_plain = grads(reverse=False)
    shared_reversed, domain_reversed = grads(reverse=True)
    for a, b in zip(shared_plain, shared_reversed, strict=True):
        assert torch.allclose(b, -a)
        assert a.abs().sum() > 0
    for a, b in zip(domain_plain, domain_reversed, strict=True):
        assert torch.equal(a, b)  # the domain classifier itself still learns


def test_domain_loss_is_balanced_bce_with_one_logit():
    s, t = torch.tensor([0.3, -1.0]), torch.tensor([2.0, 0.0, 1.0])

    def bce(z, label):
        p = 1 / (1 + np.exp(-np.asarray(z)))
        return -np.mean(np.log(p) if label else np.log(1 - p))

    expected = (bce(s, 0) + bce(t, 1)) / 2
    assert float(_adapt_terms.domain_loss(s, t)) == pytest.approx(expected, rel=1e-6)


def test_pseudo_labels_respect_the_threshold():
    proba = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.2, 0.8]])
    labels, confident = _adapt_terms.pseudo_labels(proba, 0.85)
    assert confident.tolist() == [True, False, True, False]
    assert labels.tolist() == [0, 1]
    labels, confident = _adapt_terms.pseudo_labels(proba, 0.8)  # at the threshold: kept
    assert confident.tolist() == [True, False, True, True]


def test_self_training_with_no_confident_row_adds_nothing(shifted):
    # threshold 1.0: no pseudo-label, so the fit is the adapt_weight=0 fit.
    X, _, y_marked = shifted
    kwargs = {"hidden_layer_sizes": (8,), "max_epochs": 3, "random_state": 0}
    none = TransferClassifier(adapt="self_training", adapt_threshold=1.0, **kwargs).fit(
        X, y_marked
    )
    zero = TransferClassifier(adapt="self_training", adapt_weight=0.0, **kwargs).fit(
        X, y_marked
    )
    some = TransferClassifier(
        adapt="self_training", adapt_threshold=0.34, **kwargs
    ).fit(X, y_marked)
    assert equal_weights(none.net_.module_.state_dict(), zero.net_.module_.state_dict())
    assert not equal_weights(
        none.net_.module_.state_dict(), some.net_.module_.state_dict()
    )


# ------------------------------------------------------ rows and the loss


class RecordingCE(nn.CrossEntropyLoss):
    seen = []

    def forward(self, input, target):  # noqa: A002 (torch's name)
        RecordingCE.seen.append(target.detach().clone())
        return super().forward(input, target)


@pytest.mark.parametrize("method", _adapt.METHODS)
def test_unlabelled_rows_never_reach_the_supervised_loss(shifted, method):
    X, y, y_marked = shifted
    RecordingCE.seen = []
    net = tiny_classifier_net(criterion=RecordingCE, max_epochs=2, batch_size=50)
    TransferClassifier(net, adapt=method, adapt_threshold=0.34, random_state=0).fit(
        X, y_marked
    )
    targets = torch.cat(RecordingCE.seen)
    assert (targets >= 0).all()
    # Each epoch's supervised loss saw exactly the 120 labelled rows (plus,
    # for self-training, pseudo-labels computed from the outputs).
    if method != "self_training":
        assert len(targets) == 2 * 120
        assert sorted(targets.tolist()) == sorted(2 * y[:120].tolist())


def test_marked_rows_values_do_not_matter(shifted, monkeypatch):
    # Rows marked unlabelled give bit-identical weights whatever labels they hold.
    X, y, _ = shifted
    mask = np.arange(len(y)) >= 120
    monkeypatch.setattr(_adapt, "unlabelled_rows", lambda y, *, regression: mask.copy())
    kwargs = {"adapt": "mmd", "hidden_layer_sizes": (8,), "max_epochs": 2}
    a = TransferClassifier(**kwargs, random_state=0).fit(X, y)
    flipped = y.copy()
    flipped[mask] = (flipped[mask] + 1) % 3
    b = TransferClassifier(**kwargs, random_state=0).fit(X, flipped)
    assert equal_weights(a.net_.module_.state_dict(), b.net_.module_.state_dict())


def test_regressor_nan_rows_are_unlabelled(shifted):
    X, _, _ = shifted
    y = (X[:, 0] * 3 + 10).astype(np.float64)
    y[120:] = np.nan
    reg = TransferRegressor(tiny_regressor_net(max_epochs=2), adapt="coral")
    reg.fit(X, y)
    assert reg._y_mean[0] == pytest.approx(y[:120].mean())
    assert np.isfinite(reg.predict(X[120:])).all()
    # R² on the labelled rows only.
    assert reg.score(X, y) == pytest.approx(reg.score(X[:120], y[:120]))


def test_regressor_refuses_nan_without_adapt_and_self_training(shifted):
    X, _, _ = shifted
    y = X[:, 0].astype(np.float64)
    y[120:] = np.nan
    with pytest.raises(ValueError, match=r"y has 60 rows with NaN targets.*adapt set"):
        TransferRegressor(tiny_regressor_net()).fit(X, y)
    reg = TransferRegressor(tiny_regressor_net(), adapt="self_training")
    with pytest.raises(ValueError, match="adapt='self_training' pseudo-labels"):
        reg.fit(X, y)
    assert not hasattr(reg, "net_")


def test_minus_one_without_adapt(shifted):
    X, y, y_marked = shifted
    with pytest.warns(UserWarning, match="trains -1 as a class"):
        clf = TransferClassifier(tiny_classifier_net(max_epochs=1)).fit(X, y_marked)
    assert -1 in clf.classes_  # as documented: a class, with a warning
    pm = np.where(y == 0, -1, 1)  # labels {-1, 1}: an ordinary binary task
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf = TransferClassifier(tiny_classifier_net(max_epochs=1)).fit(X, pm)
    assert clf.classes_.tolist() == [-1, 1]


def test_binary_classification(shifted):
    X, y, y_marked = shifted
    binary = np.where(y_marked == -1, -1, y_marked % 2)
    clf = TransferClassifier(tiny_classifier_net(max_epochs=2), adapt="dann").fit(
        X, binary
    )
    assert clf.classes_.tolist() == [0, 1]
    assert clf.predict_proba(X[120:]).shape == (60, 2)


@pytest.mark.parametrize(
    ("y_change", "match"),
    [
        (lambda y: np.full_like(y, -1), "every row of y is -1"),
        (lambda y: np.where(y == -1, 0, y), "y has none"),
    ],
)
def test_needs_both_kinds_of_row(shifted, y_change, match):
    X, _, y_marked = shifted
    clf = TransferClassifier(tiny_classifier_net(), adapt="coral")
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y_change(y_marked))
    assert not hasattr(clf, "net_")


def test_refuses_mixup(shifted):
    X, _, y_marked = shifted
    clf = TransferClassifier(tiny_classifier_net(), adapt="mmd", mixup_alpha=0.2)
    with pytest.raises(ValueError, match="MixUp and CutMix mix labelled"):
        clf.fit(X, y_marked)


def test_class_weight_balances_labelled_rows_only(shifted):
    X, y, y_marked = shifted
    clf = TransferClassifier(adapt="coral", class_weight="balanced")
    unlabelled = y_marked == -1
    weights = _adapt.labelled_weights(clf, None, X, y, unlabelled)
    expected = compute_sample_weight("balanced", y[:120])
    np.testing.assert_allclose(weights[:120], expected, rtol=1e-6)
    assert (weights[120:] == 0).all()


# ------------------------------------------- estimator behaviour (skada's faults)


def test_nothing_of_adaptation_stays_on_the_fitted_net(shifted):
    X, _, y_marked = shifted
    plain = TransferClassifier(tiny_classifier_net(max_epochs=1), random_state=0)
    plain.fit(X[:120], y_marked[:120])
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=1), adapt="dann", random_state=0
    ).fit(X, y_marked)
    module = clf.net_.module_
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks for m in module.modules()
    )
    assert "get_loss" not in vars(clf.net_)
    assert len(clf.net_.optimizer_.param_groups) == len(
        plain.net_.optimizer_.param_groups
    )
    assert clf.predict(X[120:]).shape == (60,)  # no domain marker needed


def test_clone_and_refit_start_afresh(shifted):
    X, y, y_marked = shifted
    kwargs = {"adapt": "dann", "hidden_layer_sizes": (8,), "max_epochs": 2}
    first = TransferClassifier(**kwargs, random_state=0).fit(X, y_marked)
    other = np.where(np.arange(len(y)) % 2 == 0, y_marked, -1)
    fresh = TransferClassifier(**kwargs, random_state=0).fit(X, other)
    cloned = clone(first).fit(X, other)
    refit = first.fit(X, other)
    for est in (cloned, refit):
        assert equal_weights(
            est.net_.module_.state_dict(), fresh.net_.module_.state_dict()
        )


@pytest.mark.parametrize("method", _adapt.METHODS)
def test_random_state_seeds_everything(shifted, method):
    X, _, y_marked = shifted
    kwargs = {"adapt": method, "adapt_threshold": 0.4, "max_epochs": 2}
    kwargs["hidden_layer_sizes"] = (8,)
    a = TransferClassifier(**kwargs, random_state=3).fit(X, y_marked)
    b = TransferClassifier(**kwargs, random_state=3).fit(X, y_marked)
    c = TransferClassifier(**kwargs, random_state=4).fit(X, y_marked)
    assert equal_weights(a.net_.module_.state_dict(), b.net_.module_.state_dict())
    assert not equal_weights(a.net_.module_.state_dict(), c.net_.module_.state_dict())


def test_any_module_and_layer(digit_images):
    X, y = digit_images.X_source[:90], digit_images.y_source[:90]
    y_marked = y.copy()
    y_marked[60:] = -1
    net = tiny_classifier_net(ConvNet, max_epochs=1)
    for layer in (None, "features", "head.1"):
        clf = TransferClassifier(net, adapt="dann", adapt_layer=layer, random_state=0)
        clf.fit_source(X[:60], y[:60]).fit(X, y_marked)
        assert clf.predict(X[60:]).shape == (30,)


def test_wrong_layer_names_the_nearest(shifted):
    X, _, y_marked = shifted
    net = tiny_classifier_net(ConvNet)
    clf = TransferClassifier(net, adapt="coral", adapt_layer="featurs")
    images = np.zeros((len(X), 1, 8, 8), np.float32)
    with pytest.raises(
        ValueError, match=r"adapt_layer='featurs'.*Did you mean 'features'"
    ):
        clf.fit(images, y_marked)
    assert not hasattr(clf, "net_")


def test_layer_in_cached_frozen_stage_is_refused(digit_images):
    X, y = digit_images.X_source[:90], digit_images.y_source[:90]
    y_marked = y.copy()
    y_marked[60:] = -1
    net = tiny_classifier_net(ConvNet, max_epochs=1)
    clf = TransferClassifier(
        net, frozen="features.*", adapt="coral", adapt_layer="features.1"
    )
    clf.fit_source(X[:60], y[:60])
    with pytest.raises(ValueError, match="frozen stage"):
        clf.fit(X, y_marked)


# --------------------------------------------------------- model selection


def test_cross_val_score_with_unlabelled_rows(shifted):
    X, y, y_marked = shifted
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=2), adapt="coral", random_state=0
    )
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(clf, X, y_marked, cv=cv)
    expected = []
    for train, test in cv.split(X, y_marked):
        fold = clone(clf).fit(X[train], y_marked[train])
        labelled = test[y_marked[test] != -1]
        # Folds split both kinds of row; score reads the labelled ones.
        assert (y_marked[train] == -1).any()
        assert (y_marked[test] == -1).any()
        expected.append(accuracy_score(y[labelled], fold.predict(X[labelled])))
    np.testing.assert_allclose(scores, expected)
    entropy = cross_val_score(
        clf, X, y_marked, cv=cv, scoring=sktransfer.prediction_entropy_scorer
    )
    assert np.isfinite(entropy).all()
    assert (entropy <= 0).all()


def test_grid_search_chooses_adapt_weight_without_labels(shifted):
    X, _, y_marked = shifted
    clf = TransferClassifier(tiny_classifier_net(max_epochs=1), adapt="mmd")
    search = GridSearchCV(
        clf,
        {"adapt_weight": [0.0, 1.0]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring={
            "entropy": sktransfer.prediction_entropy_scorer,
            "iwv": sktransfer.importance_weighted_scorer,
        },
        refit=False,
    )
    search.fit(X, y_marked)
    assert np.isfinite(search.cv_results_["mean_test_entropy"]).all()
    assert np.isfinite(search.cv_results_["mean_test_iwv"]).all()


def test_cached_frozen_stage_below_adapt_layer(digit_images):
    # The frozen features are computed once; the head's input, after them, is
    # aligned on the cached outputs as on the uncached network.
    X, y = digit_images.X_source[:90], digit_images.y_source[:90]
    y_marked = y.copy()
    y_marked[60:] = -1
    fits = {}
    for cache in (True, False):
        net = tiny_classifier_net(ConvNet, max_epochs=2)
        clf = TransferClassifier(
            net, frozen="features.*", adapt="mmd", cache_frozen=cache, random_state=0
        )
        fits[cache] = clf.fit_source(X[:60], y[:60]).fit(X, y_marked)
    assert fits[True].frozen_cache_["cached"]
    a, b = (fits[c].net_.module_.state_dict() for c in (True, False))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_bad_settings_are_refused(shifted):
    from sklearn.utils._param_validation import InvalidParameterError

    X, _, y_marked = shifted
    with pytest.raises(InvalidParameterError, match="adapt"):
        TransferClassifier(adapt="coral_").fit(X, y_marked)
    with pytest.raises(InvalidParameterError, match="adapt_threshold"):
        TransferClassifier(adapt="self_training", adapt_threshold=1.5).fit(X, y_marked)
    clf = TransferClassifier(tiny_classifier_net(), adapt="coral")
    with pytest.raises(ValueError, match="partial_fit does not adapt"):
        clf.partial_fit(X, y_marked, classes=[0, 1, 2])
    assert not hasattr(clf, "net_")


def test_compare_transfer_reports_adaptation_settings(shifted):
    X, _, y_marked = shifted
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=1), adapt="coral", random_state=0
    )
    clf.fit_source(X[:120], y_marked[:120])
    with pytest.raises(ValueError, match="linear_probe=False"):
        sktransfer.compare_transfer(clf, X, y_marked, cv=2)
    comparison = sktransfer.compare_transfer(
        clf,
        X,
        y_marked,
        cv=2,
        linear_probe=False,
        settings={"no adaptation": {"adapt_weight": 0.0}, "dann": {"adapt": "dann"}},
        scoring=sktransfer.prediction_entropy_scorer,
        random_state=0,
    )
    assert list(comparison.scores) == ["scratch", "transfer", "no adaptation", "dann"]
    expected = cross_val_score(
        clone(clf).set_params(adapt="dann"),
        X,
        y_marked,
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring=sktransfer.prediction_entropy_scorer,
    )
    np.testing.assert_allclose(comparison.scores["dann"], expected)
