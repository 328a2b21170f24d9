"""Few labels: the pretrained switch, features, early stopping, layer decay."""

import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from skorch.callbacks import Callback

import sktransfer
from sktransfer import MLP, PretrainedFeatures, TransferClassifier, compare_transfer
from sktransfer._compat import L2_LOGISTIC_CV
from sktransfer._skorch._finetune import layer_depths


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained classifier (clone it before fitting)."""
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


def relu_features(X, state, prefix="features.1"):
    """The default MLP's hidden layer by hand: relu(X W^T + b)."""
    W = state[f"{prefix}.weight"].numpy().astype(np.float64)
    b = state[f"{prefix}.bias"].numpy().astype(np.float64)
    return np.maximum(X.astype(np.float64) @ W.T + b, 0)


# ------------------------------------------------------------ pretrained=False


def test_pretrained_false_trains_as_if_there_were_no_source(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    scratch = clone(pretrained).set_params(pretrained=False)
    assert clone(scratch).pretrained is False
    scratch = clone(scratch).fit(X, y)  # the switch survives clone
    never_pretrained = TransferClassifier(tiny_classifier_net(), random_state=0)
    never_pretrained.fit(X, y)
    state = scratch.net_.module_.state_dict()
    expected = never_pretrained.net_.module_.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    transferred = clone(pretrained).fit(X, y).net_.module_.state_dict()
    assert not torch.equal(
        transferred["features.1.weight"], expected["features.1.weight"]
    )


def test_pretrained_false_leaves_no_tensor_of_a_module_instance(digits):
    module = MLP(64, 5, hidden_layer_sizes=(16,))
    source = {k: v.clone() for k, v in module.state_dict().items()}
    net = tiny_classifier_net(module, lr=0.0, max_epochs=1)
    fresh = TransferClassifier(net, pretrained=False, random_state=0)
    fresh.fit(digits.X_target, digits.y_target)
    state = fresh.net_.module_.state_dict()
    assert not any(torch.equal(state[k], source[k]) for k in source)
    kept = TransferClassifier(net, random_state=0).fit(digits.X_target, digits.y_target)
    state = kept.net_.module_.state_dict()
    assert torch.equal(state["features.1.weight"], source["features.1.weight"])


def test_grid_search_chooses_between_transfer_and_scratch(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    search = GridSearchCV(pretrained, {"pretrained": [True, False]}, cv=2)
    search.fit(X, y)
    assert [p["pretrained"] for p in search.cv_results_["params"]] == [True, False]
    assert search.best_estimator_.pretrained is search.best_params_["pretrained"]
    # Each split's score by hand: the pretrained clone fine-tuned on the fold,
    # and a network that never saw the source task trained on the same fold.
    for i, (train, test) in enumerate(StratifiedKFold(2).split(X, y)):
        transfer = clone(pretrained).fit(X[train], y[train])
        scratch = TransferClassifier(tiny_classifier_net(), random_state=0)
        scratch.fit(X[train], y[train])
        scores = search.cv_results_[f"split{i}_test_score"]
        assert scores[0] == transfer.score(X[test], y[test])
        assert scores[1] == scratch.score(X[test], y[test])
        assert not np.array_equal(
            transfer.predict_proba(X[test]), scratch.predict_proba(X[test])
        )


# -------------------------------------------------------------------- features


def test_transform_is_the_heads_input_computed_by_hand(pretrained, digits):
    clf = clone(pretrained).fit(digits.X_target, digits.y_target)
    state = {k: v.cpu() for k, v in clf.net_.module_.state_dict().items()}
    X = digits.X_target[:7]
    np.testing.assert_allclose(clf.transform(X), relu_features(X, state), atol=1e-5)
    names = clf.get_feature_names_out()
    assert list(names[:2]) == ["transferclassifier0", "transferclassifier1"]
    assert len(names) == 16


def test_features_as_pandas_frames(pretrained, digits):
    # set_output(transform="pandas") asks get_feature_names_out, which ran
    # transform, which asked the names again: a RecursionError.
    pytest.importorskip("pandas")
    X, y = digits.X_target, digits.y_target
    features = PretrainedFeatures(pretrained).set_output(transform="pandas").fit(X)
    frame = features.transform(X[:5])
    assert list(frame.columns) == list(features.get_feature_names_out())
    assert frame.columns[0] == "pretrainedfeatures0"
    np.testing.assert_allclose(
        frame.to_numpy(), relu_features(X[:5], pretrained.source_weights_), atol=1e-5
    )
    probe = sktransfer.linear_probe(pretrained).set_output(transform="pandas")
    assert probe.fit(X, y).score(X, y) > 0.5


def test_pretrained_features_are_the_source_networks_before_any_target_fit(
    pretrained, digits
):
    X, y = digits.X_target, digits.y_target
    features = PretrainedFeatures(pretrained).fit(X)
    expected = relu_features(X, pretrained.source_weights_)
    np.testing.assert_allclose(features.transform(X), expected, atol=1e-5)
    assert not hasattr(pretrained, "net_")  # nothing fitted on the estimator
    probe = make_pipeline(
        PretrainedFeatures(pretrained), LogisticRegression(max_iter=1000)
    )
    by_hand = make_pipeline(
        FunctionTransformer(
            relu_features, kw_args={"state": pretrained.source_weights_}
        ),
        LogisticRegression(max_iter=1000),
    )
    np.testing.assert_array_equal(
        clone(probe).fit(X, y).predict(X), by_hand.fit(X, y).predict(X)
    )


def test_pretrained_features_need_pretrained_weights(digits):
    with pytest.raises(ValueError, match="needs pretrained weights"):
        PretrainedFeatures(TransferClassifier(tiny_classifier_net())).fit(
            digits.X_target
        )
    with pytest.raises(TypeError, match="got LogisticRegression"):
        PretrainedFeatures(LogisticRegression()).fit(digits.X_target)


def test_pretrained_features_refuse_pretrained_false(pretrained, digits):
    # pretrained=False would be silently ignored: the features are pretrained.
    scratch = clone(pretrained).set_params(pretrained=False)
    with pytest.raises(ValueError, match="pretrained=False"):
        PretrainedFeatures(scratch).fit(digits.X_target)
    # The linear probe of such an estimator uses the pretrained weights.
    probe = sktransfer.linear_probe(scratch).fit(digits.X_target, digits.y_target)
    np.testing.assert_array_equal(
        probe[0].transform(digits.X_target),
        PretrainedFeatures(pretrained).fit(digits.X_target).transform(digits.X_target),
    )


def test_compare_transfer_reports_the_linear_probe(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compare_transfer(pretrained, X, y, cv=3, random_state=0)
    assert list(result.scores) == ["scratch", "transfer", "linear probe"]
    by_hand = make_pipeline(
        FunctionTransformer(
            relu_features, kw_args={"state": pretrained.source_weights_}
        ),
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-4, 4, 17),
            cv=StratifiedKFold(3),
            scoring="neg_log_loss",
            max_iter=1000,
            **L2_LOGISTIC_CV,
        ),
    )
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    np.testing.assert_allclose(
        result.scores["linear probe"],
        cross_val_score(by_hand, X, y, cv=cv, scoring="accuracy"),
    )


# -------------------------------------------------------------- early stopping


class Recorder(Callback):
    """Keeps the weights at the end of every epoch."""

    def initialize(self):
        self.states = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.states.append(
            {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
        )


def test_early_stopping_restores_the_best_epochs_weights(digits):
    net = tiny_classifier_net(lr=0.05, max_epochs=60, callbacks=[("rec", Recorder())])
    clf = TransferClassifier(
        net,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        random_state=0,
    ).fit(digits.X_target, digits.y_target)
    losses = clf.net_.history[:, "valid_loss"]
    assert len(losses) < 60  # it stopped early
    best = int(np.argmin(losses))
    assert best < len(losses) - 1
    recorded = dict(clf.net_.callbacks_)["rec"].states[best]
    state = clf.net_.module_.state_dict()
    assert all(torch.equal(state[k], recorded[k]) for k in recorded)
    assert dict(clf.net_.callbacks_)["early_stopping"].best_model_weights_ is None


def test_early_stopping_keeps_the_frozen_stage_cache(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    params = {
        "frozen": "features.*",
        "early_stopping": True,
        "validation_fraction": 0.2,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 epochs on purpose
        fits = [
            clone(pretrained).set_params(cache_frozen=cache, **params).fit(X, y)
            for cache in (True, False)
        ]
    assert fits[0].frozen_cache_["cached"]
    assert not fits[1].frozen_cache_["cached"]
    a, b = (fit.net_.module_.state_dict() for fit in fits)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_early_stopping_needs_a_validation_sample_of_every_class(digits):
    clf = TransferClassifier(
        tiny_classifier_net(), early_stopping=True, validation_fraction=0.05
    )
    with pytest.raises(ValueError, match="holds out 3 of 50 samples"):
        clf.fit(digits.X_target, digits.y_target)
    assert not hasattr(clf, "net_")


def test_n_iter_no_change_is_the_default_settings_patience(digits):
    clf = TransferClassifier(n_iter_no_change=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digits.X_target, digits.y_target)
    stopper = dict(clf.net_.callbacks_)["early_stopping"]
    assert stopper.patience == 2
    assert stopper.monitor == "train_loss"


# ----------------------------------------------------------------- layer decay


class Step(Callback):
    """Keeps the weights before the (one) step and the gradients it used."""

    def on_batch_begin(self, net, **kwargs):
        self.before = {n: p.detach().clone() for n, p in net.module_.named_parameters()}

    def on_grad_computed(self, net, named_parameters, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in named_parameters}


def test_layer_decay_gives_each_layer_the_documented_rate(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    net = tiny_classifier_net(
        optimizer=torch.optim.SGD,
        lr=0.5,
        max_epochs=1,
        batch_size=len(X),
        iterator_train__shuffle=False,
        module__hidden_layer_sizes=(16, 8),
        callbacks=[("step", Step())],
    )
    clf = TransferClassifier(net, layer_decay=0.5, shared_lr_scale=0.1, random_state=0)
    clf.fit(X, y)
    step = dict(clf.net_.callbacks_)["step"]
    rates = {"features.1": 0.5 * 0.1 * 0.25, "features.3": 0.5 * 0.1 * 0.5, "head": 0.5}
    for name, param in clf.net_.module_.named_parameters():
        rate = rates[name.rpartition(".")[0]]
        expected = step.before[name] - rate * step.grads[name]
        torch.testing.assert_close(param.detach(), expected)


def test_layer_depths_count_a_norm_layer_with_the_layer_before_it():
    module = ConvNet()
    depths = layer_depths(module, ("head",))
    params = dict(module.named_parameters())
    assert {
        name: depths[id(params[name])] for name in params if id(params[name]) in depths
    } == {
        "features.0.weight": 1,
        "features.0.bias": 1,
        "features.1.weight": 1,
        "features.1.bias": 1,
    }


def test_pretrained_features_repr_shows_the_template_as_written(pretrained):
    # scikit-learn's nested printer would list every skorch setting instead.
    features = PretrainedFeatures(pretrained)
    assert repr(features) == f"PretrainedFeatures(estimator={pretrained!r})"
    assert "_params_to_validate" not in repr(features)
