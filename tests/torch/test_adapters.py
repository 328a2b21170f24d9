"""LoRA adapters through peft (``adapter="lora"``) on tiny plain torch networks."""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from sktransfer import TransferClassifier, TransferRegressor
from sktransfer.datasets import make_digits_transfer

pytest.importorskip("peft")


class Net(nn.Module):
    """Conv2d, BatchNorm, grouped Conv2d, Linear and a Linear head, for 8x8 images."""

    def __init__(self, n_outputs=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, padding=1, groups=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.body = nn.Sequential(nn.Linear(128, 16), nn.ReLU())
        self.head = nn.Linear(16, n_outputs)

    def forward(self, X):
        return self.head(self.body(self.features(X)))


class RNNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, X):
        return self.head(self.rnn(X)[0][:, -1])


@pytest.fixture(scope="module")
def data():
    return make_digits_transfer(10, random_state=0, images=True)


@pytest.fixture(scope="module")
def pretrained():
    """A Net with "pretrained" weights (random, BatchNorm statistics set)."""
    torch.manual_seed(1)
    net = Net()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net


def lora(module, **params):
    settings = {
        "adapter": "lora",
        "lora_rank": 4,
        "lr": 0.05,
        "max_epochs": 3,
        "random_state": 0,
    }
    settings.update(params)
    return TransferClassifier(copy.deepcopy(module), **settings)


def fit_quiet(estimator, X, y, **kwargs):
    """Fit, ignoring the ConvergenceWarning of a few-epoch fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y, **kwargs)


def base_state(module):
    """The pretrained entries of an adapted module, by their original names."""
    return {
        name.replace(".base_layer", ""): value
        for name, value in module.state_dict().items()
        if "lora_" not in name and not name.startswith("head.")
    }


def test_base_parameters_bit_identical_after_fit(data, pretrained):
    clf = fit_quiet(
        lora(pretrained, frozen="features.0.*"), data.X_target, data.y_target
    )
    module = clf.net_.module_
    original = dict(pretrained.named_parameters())
    adapted = {
        name.replace(".base_layer", ""): param
        for name, param in module.named_parameters()
        if "lora_" not in name and not name.startswith("head.")
    }
    assert adapted.keys() == {n for n in original if not n.startswith("head.")}
    for name, param in adapted.items():
        assert torch.equal(param, original[name]), name
    # The adapters and the head did train.
    assert module.body[0].lora_B["default"].weight.abs().sum() > 0
    assert not torch.equal(module.head.weight, pretrained.head.weight)
    # frozen parts get no adapter, the head none; the rest does.
    assert clf.adapter_["layers"] == ["features.3", "body.0"]
    n_adapter = sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    assert clf.adapter_["n_adapter_parameters"] == n_adapter
    assert clf.adapter_["n_trainable_parameters"] == n_adapter + 16 * 5 + 5
    assert clf.adapter_["n_parameters"] == sum(
        p.numel() for p in pretrained.parameters()
    )


class _OutputsAtStart(Callback):
    """Records the network's evaluation outputs on ``X`` when training begins."""

    def __init__(self, X):
        self.X = X

    def on_train_begin(self, net, **kwargs):
        module = net.module_
        was = module.training
        module.eval()
        with torch.no_grad():
            self.outputs_ = module(torch.as_tensor(self.X)).clone()
        module.train(was)


def test_predictions_bit_identical_to_pretrained_before_first_step(data, pretrained):
    def fitted(adapter):
        recorder = _OutputsAtStart(data.X_target[:20])
        net = NeuralNetClassifier(
            copy.deepcopy(pretrained),
            criterion=nn.CrossEntropyLoss,
            max_epochs=1,
            lr=0.1,
            train_split=None,
            callbacks=[("start", recorder)],
        )
        clf = TransferClassifier(
            net, adapter=adapter, cache_frozen=False, random_state=0
        )
        fit_quiet(clf, data.X_target, data.y_target)
        return dict(clf.net_.callbacks_)["start"].outputs_  # the template's clone

    plain = fitted(None)  # the pretrained network with its new head
    adapted = fitted("lora")
    assert torch.equal(adapted, plain)


def test_merged_module_equals_adapted_network(data, pretrained):
    clf = fit_quiet(lora(pretrained), data.X_target, data.y_target)
    module = clf.net_.module_
    # Linear, Conv2d and grouped Conv2d are adapted, each with a non-zero update.
    assert clf.adapter_["layers"] == ["features.0", "features.3", "body.0"]
    for name in clf.adapter_["layers"]:
        assert module.get_submodule(name).lora_B["default"].weight.abs().sum() > 0
    merged = clf.merge()
    assert type(merged.features[0]) is nn.Conv2d
    assert type(merged.features[3]) is nn.Conv2d  # ungrouped: peft cannot merge it
    assert type(merged.body[0]) is nn.Linear
    assert not any("lora" in name for name, _ in merged.named_parameters())
    X = torch.as_tensor(data.X_target)
    merged.eval()
    module.eval()
    with torch.no_grad():
        expected = module(X)
        got = merged(X)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    # The merge folded the update in: it differs from the pretrained weights.
    assert not torch.allclose(merged.body[0].weight, pretrained.body[0].weight)
    # merge leaves the estimator's network adapted.
    assert "lora_A" in dict(clf.net_.module_.named_modules())["body.0"]._modules


def test_adapter_round_trip_with_batchnorm_statistics(data, pretrained, tmp_path):
    clf = fit_quiet(
        lora(pretrained, freeze_bn_stats=False), data.X_target, data.y_target
    )
    bn = clf.net_.module_.features[1]
    assert not torch.equal(bn.running_mean, pretrained.features[1].running_mean)
    path = tmp_path / "adapter.safetensors"
    clf.save_adapter(path)

    from safetensors.torch import load_file

    saved = load_file(path)
    assert "features.1.running_mean" in saved
    assert not any(
        "base_layer" in key or key.startswith("body.0.weight") for key in saved
    )
    n_bytes = sum(v.numel() * v.element_size() for v in saved.values())
    full = sum(v.numel() * v.element_size() for v in pretrained.state_dict().values())
    assert n_bytes < full

    loaded = lora(pretrained, freeze_bn_stats=False).load_adapter(path)
    assert np.array_equal(loaded.classes_, clf.classes_)
    np.testing.assert_array_equal(
        loaded.predict_proba(data.X_target), clf.predict_proba(data.X_target)
    )
    assert torch.equal(loaded.net_.module_.features[1].running_mean, bn.running_mean)
    assert loaded.adapter_ == clf.adapter_

    # Into a fitted estimator: its adapter and head are replaced.
    other = fit_quiet(
        lora(pretrained, freeze_bn_stats=False, random_state=3),
        data.X_target,
        data.y_target,
    )
    assert not np.array_equal(
        other.predict_proba(data.X_target), clf.predict_proba(data.X_target)
    )
    other.load_adapter(path)
    np.testing.assert_array_equal(
        other.predict_proba(data.X_target), clf.predict_proba(data.X_target)
    )


def test_adapter_of_another_base_is_refused(data, pretrained, tmp_path):
    clf = fit_quiet(lora(pretrained), data.X_target, data.y_target)
    path = tmp_path / "adapter.safetensors"
    clf.save_adapter(path)
    other_base = copy.deepcopy(pretrained)
    with torch.no_grad():
        other_base.body[0].weight[0, 0] += 1e-3
    refusing = lora(other_base)
    with pytest.raises(ValueError, match="other pretrained weights"):
        refusing.load_adapter(path)
    assert not hasattr(refusing, "net_")  # left unchanged
    with pytest.raises(ValueError, match="adapter=None"):
        TransferClassifier(copy.deepcopy(pretrained)).load_adapter(path)
    with pytest.raises(ValueError, match="another shape"):
        lora(pretrained, lora_rank=2).load_adapter(path)
    not_adapter = tmp_path / "x.safetensors"
    not_adapter.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="Cannot read an adapter file"):
        lora(pretrained).load_adapter(not_adapter)


def test_grid_search_over_rank(data, pretrained):
    search = GridSearchCV(
        lora(pretrained, max_epochs=2), {"lora_rank": [2, 4]}, cv=2, error_score="raise"
    )
    fit_quiet(search, data.X_target, data.y_target)
    assert search.cv_results_["param_lora_rank"].tolist() == [2, 4]
    rank = search.best_params_["lora_rank"]
    lora_a = search.best_estimator_.net_.module_.body[0].lora_A["default"]
    assert lora_a.out_features == rank


def test_clone_and_pickle(data, pretrained):
    clf = lora(pretrained, lora_rank=2, lora_alpha=4.0, lora_targets="body.*")
    params = clone(clf).get_params(deep=False)
    assert params["adapter"] == "lora"
    assert params["lora_rank"] == 2
    assert params["lora_targets"] == "body.*"
    fit_quiet(clf, data.X_target, data.y_target)
    assert clf.adapter_["layers"] == ["body.0"]
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(
        restored.predict_proba(data.X_target), clf.predict_proba(data.X_target)
    )
    assert restored.merge()(torch.as_tensor(data.X_target[:2])).shape == (2, 5)


def test_layer_peft_cannot_adapt_is_named():
    X = np.random.default_rng(0).normal(size=(30, 4, 8)).astype(np.float32)
    y = np.arange(30) % 3
    clf = TransferClassifier(RNNNet(), adapter="lora", lora_targets="rnn")
    with pytest.raises(ValueError, match=r"'rnn', an LSTM, .*nn\.Linear.*nn\.Conv2d"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match=r"rnn \(LSTM\).*peft adapts nn\.Linear"):
        TransferClassifier(RNNNet(), adapter="lora").fit(X, y)
    with pytest.raises(ValueError, match="head"):
        TransferClassifier(RNNNet(), adapter="lora", lora_targets="head").fit(X, y)


def test_settings_that_cannot_compose_are_refused(data, pretrained):
    with pytest.raises(ValueError, match="unfreeze=.*adapter keeps every"):
        lora(pretrained, unfreeze=((2, "body.*"),)).fit(data.X_target, data.y_target)
    with pytest.raises(ValueError, match="frozen holds"):
        lora(pretrained, frozen="body.*", lora_targets="body.0").fit(
            data.X_target, data.y_target
        )
    with pytest.raises(TypeError, match="peft config object"):
        TransferClassifier(pretrained, adapter=3).fit(data.X_target, data.y_target)


def test_frozen_stage_up_to_first_adapted_layer_is_cached(data, pretrained):
    cached = fit_quiet(
        lora(pretrained, frozen="features.0.*"), data.X_target, data.y_target
    )
    # The stage ends before the first adapted layer (features.3).
    assert cached.frozen_cache_["cached"]
    assert cached.frozen_cache_["stage"] == "features_2"
    uncached = fit_quiet(
        lora(pretrained, frozen="features.0.*", cache_frozen=False),
        data.X_target,
        data.y_target,
    )
    np.testing.assert_allclose(
        cached.predict_proba(data.X_target),
        uncached.predict_proba(data.X_target),
        rtol=0,
        atol=1e-6,
    )


def test_layer_decay_treats_an_adapted_layer_as_one_layer(data, pretrained):
    clf = fit_quiet(
        lora(pretrained, layer_decay=0.5, shared_lr_scale=0.5, max_epochs=1),
        data.X_target,
        data.y_target,
    )
    module = clf.net_.module_
    lr_of = {
        id(p): group["lr"]
        for group in clf.net_.optimizer_.param_groups
        for p in group["params"]
    }
    # Depth below the head: body.0 is 1, features.3 is 2 (features.1, a norm
    # layer, goes with features.0, which is 3).
    for name, depth in (("body.0", 1), ("features.3", 2), ("features.0", 3)):
        layer = module.get_submodule(name)
        for part in ("lora_A", "lora_B"):
            param = layer.get_submodule(part)["default"].weight
            assert lr_of[id(param)] == pytest.approx(0.05 * 0.5 * 0.5**depth)
    assert lr_of[id(module.head.weight)] == 0.05


def test_sample_weight_early_stopping_and_regressor(data, pretrained, tmp_path):
    w = np.ones(len(data.y_target))
    w[::2] = 2.0
    clf = fit_quiet(
        lora(pretrained, early_stopping=True, validation_fraction=0.2, max_epochs=4),
        data.X_target,
        data.y_target,
        sample_weight=w,
    )
    for name, value in base_state(clf.net_.module_).items():
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(value, pretrained.state_dict()[name]), name

    reg = TransferRegressor(
        copy.deepcopy(pretrained), adapter="lora", max_epochs=2, random_state=0
    )
    y = data.y_target.astype(np.float32)
    fit_quiet(reg, data.X_target, y)
    assert reg.adapter_["layers"] == ["features.0", "features.3", "body.0"]
    assert reg.predict(data.X_target).shape == y.shape
    path = tmp_path / "regressor.safetensors"
    reg.save_adapter(path)
    loaded = TransferRegressor(copy.deepcopy(pretrained), adapter="lora")
    np.testing.assert_array_equal(
        loaded.load_adapter(path).predict(data.X_target), reg.predict(data.X_target)
    )


def test_transfer_search_and_comparison_with_a_lora_row(data, pretrained):
    from sktransfer import compare_transfer, make_transfer_search

    search = make_transfer_search(
        lora(pretrained, max_epochs=2), frozen=[()], probe=False, cv=2, random_state=0
    )
    search.param_grid[0]["model__lora_rank"] = [2, 4]
    fit_quiet(search, data.X_target, data.y_target)
    params = search.cv_results_["params"]
    assert [p.get("model__lora_rank") for p in params[:2]] == [2, 4]
    # Training from scratch is never a LoRA candidate: its base is random.
    assert params[2]["model"].adapter is None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comparison = compare_transfer(
            TransferClassifier(copy.deepcopy(pretrained), max_epochs=2, lr=0.05),
            data.X_target,
            data.y_target,
            cv=2,
            settings={"LoRA": {"adapter": "lora", "lora_rank": 4}},
            linear_probe=False,
            random_state=0,
        )
    assert list(comparison.scores) == ["scratch", "transfer", "LoRA"]
    assert np.all(np.isfinite(comparison.scores["LoRA"]))


def test_verbose_prints_the_adapter_report(data, pretrained, capsys):
    clf = fit_quiet(
        lora(pretrained, max_epochs=1, verbose=1), data.X_target, data.y_target
    )
    out = capsys.readouterr().out
    report = clf.adapter_
    assert (
        f"Adapter on 3 layers (features.0, features.3, body.0): "
        f"{report['n_trainable_parameters']:,} trainable parameters"
    ) in out
    plain = fit_quiet(
        TransferClassifier(copy.deepcopy(pretrained), max_epochs=1),
        data.X_target,
        data.y_target,
    )
    assert plain.adapter_ is None


class _BaseKept:
    """Scorer: 1.0 when the fitted network's pretrained weights equal ``state``.

    It holds a digest, not tensors, so that no weights travel with it.
    """

    def __init__(self, state):
        from sktransfer._pretrained import _dask

        self.digest = _dask.digest(state)

    def __call__(self, estimator, X, y):
        from sktransfer._pretrained import _dask

        return float(_dask.digest(base_state(estimator.net_.module_)) == self.digest)


def _on_a_dask_worker(estimator, X, y):
    """Scorer: 1.0 when it runs in a Dask worker process."""
    import distributed

    try:
        distributed.get_worker()
    except ValueError:
        return 0.0
    return 1.0


def test_grid_search_over_rank_on_dask_scores_as_the_local_search(data):
    distributed = pytest.importorskip("distributed")
    import joblib

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pretrained = lora(Net(), max_epochs=2).fit_source(data.X_source, data.y_source)
    state = {
        name: value.clone()
        for name, value in pretrained.source_weights_.items()
        if not name.startswith("head.")
    }
    grid = GridSearchCV(
        pretrained,
        {"lora_rank": [2, 4]},
        scoring={
            "accuracy": "accuracy",
            "kept": _BaseKept(state),
            "on_worker": _on_a_dask_worker,
        },
        refit="accuracy",
        cv=2,
        error_score="raise",
    )
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)  # both worker processes take tasks
        with joblib.parallel_backend("dask"):
            fit_quiet(grid, data.X_target, data.y_target)
    results = grid.cv_results_
    assert (results["mean_test_on_worker"] == 1.0).all()
    # Every fit on a worker kept the pretrained weights bit for bit.
    assert (results["mean_test_kept"] == 1.0).all()
    local = fit_quiet(
        clone(grid).set_params(scoring="accuracy", refit=False),
        data.X_target,
        data.y_target,
    )
    np.testing.assert_array_equal(
        results["mean_test_accuracy"], local.cv_results_["mean_test_score"]
    )
    assert results["param_lora_rank"].tolist() == [2, 4]
    # The pretrained weights the search started from are unchanged.
    for name, value in state.items():
        assert torch.equal(pretrained.source_weights_[name], value), name
