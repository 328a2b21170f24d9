"""The ``lora_*`` settings: LoRA's scale, and settings that cannot act."""

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from sktransfer import TransferClassifier, make_transfer_search

peft = pytest.importorskip("peft")


class Net(nn.Module):
    """Two linear layers and a linear head."""

    def __init__(self, n_outputs=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, n_outputs)

    def forward(self, X):
        return self.head(self.body(X))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(36, 6)).astype(np.float32)
    return X, np.arange(36) % 3


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(1)
    return Net()


def fitted(pretrained, X, y, **params):
    """Fit a copy of ``pretrained``; return the estimator and the lora_ warnings."""
    settings = {"head": "head", "lr": 0.05, "max_epochs": 2, "random_state": 0}
    clf = TransferClassifier(copy.deepcopy(pretrained), **{**settings, **params})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf, [w for w in record if "lora_" in str(w.message)]


def test_default_alpha_scales_updates_by_one_at_every_rank(data, pretrained):
    for rank in (1, 4, 16):
        clf, _ = fitted(pretrained, *data, adapter="lora", lora_rank=rank)
        module = clf.net_.module_
        for name in ("body.0", "body.2"):
            layer = module.get_submodule(name)
            assert layer.r["default"] == rank
            assert layer.scaling["default"] == 1.0
        assert clf.adapter_["lora_rank"] == rank
        assert clf.adapter_["scaling"] == 1.0
    clf, _ = fitted(pretrained, *data, adapter="lora", lora_rank=4, lora_alpha=2.0)
    assert clf.net_.module_.body[0].scaling["default"] == 0.5
    assert clf.adapter_["lora_alpha"] == 2.0
    assert clf.adapter_["scaling"] == 0.5


def test_default_rank_fits_as_the_former_default_alpha_8(data, pretrained):
    X, y = data
    default, _ = fitted(pretrained, X, y, adapter="lora")
    explicit, _ = fitted(pretrained, X, y, adapter="lora", lora_rank=8, lora_alpha=8)
    np.testing.assert_array_equal(default.predict_proba(X), explicit.predict_proba(X))
    # ... and alpha matters: another scale fits another model.
    other, _ = fitted(pretrained, X, y, adapter="lora", lora_alpha=32)
    assert not np.allclose(other.predict_proba(X), default.predict_proba(X))


@pytest.mark.parametrize("alpha", [0, -1.0, "8"])
def test_lora_alpha_must_be_none_or_positive(data, pretrained, alpha):
    clf = TransferClassifier(Net(), head="head", adapter="lora", lora_alpha=alpha)
    with pytest.raises(InvalidParameterError, match="lora_alpha.*None"):
        clf.fit(*data)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"lora_rank": 4},
            "lora_rank=4 has no effect with adapter=None; set adapter='lora'",
        ),
        (
            {"lora_targets": "body.*"},
            "lora_targets='body.*' has no effect with adapter=None; set adapter='lora'",
        ),
        (
            {"lora_alpha": 16.0},
            "lora_alpha=16.0 has no effect with adapter=None; set adapter='lora'",
        ),
    ],
)
def test_settings_without_an_adapter_are_said(data, pretrained, params, message):
    _, record = fitted(pretrained, *data, **params)
    assert len(record) == 1
    assert record[0].category is UserWarning
    assert str(record[0].message).startswith(message)
    assert record[0].filename == __file__


def test_settings_a_peft_config_overrides_are_said(data, pretrained):
    clf, record = fitted(
        pretrained,
        *data,
        adapter=peft.LoraConfig(r=2),
        lora_rank=16,
        lora_alpha=64.0,
        lora_dropout=0.1,
    )
    assert [str(w.message) for w in record] == [
        "lora_rank=16 is ignored: adapter is a peft LoraConfig, whose own r=2 is "
        "used; set r in the config or use adapter='lora'.",
        "lora_alpha=64.0 is ignored: adapter is a peft LoraConfig, whose own "
        "lora_alpha=8 is used; set lora_alpha in the config or use adapter='lora'.",
        "lora_dropout=0.1 is ignored: adapter is a peft LoraConfig, whose own "
        "lora_dropout=0.0 is used; set lora_dropout in the config or use "
        "adapter='lora'.",
    ]
    assert {w.filename for w in record} == {__file__}
    assert clf.adapter_["lora_rank"] == 2  # the config's, as said
    assert clf.adapter_["scaling"] == 4.0


def test_lora_targets_with_a_peft_config(data, pretrained):
    # A config without target_modules: lora_targets chooses its layers.
    clf, record = fitted(
        pretrained, *data, adapter=peft.LoraConfig(r=2), lora_targets="body.2"
    )
    assert record == []
    assert clf.adapter_["layers"] == ["body.2"]
    # A config with target_modules: they win, and lora_targets is said.
    clf, record = fitted(
        pretrained,
        *data,
        adapter=peft.LoraConfig(r=2, target_modules=["body.0"]),
        lora_targets="body.2",
    )
    assert clf.adapter_["layers"] == ["body.0"]
    (warning,) = record
    assert str(warning.message).startswith(
        "lora_targets='body.2' is ignored: adapter is a peft LoraConfig, whose own "
        "target_modules={'body.0'} is used; set target_modules in the config to "
        "None or use adapter='lora'."
    )
    assert warning.filename == __file__


def test_default_settings_are_not_warned_about(data, pretrained):
    assert fitted(pretrained, *data)[1] == []
    assert fitted(pretrained, *data, adapter="lora", lora_rank=2)[1] == []
    assert fitted(pretrained, *data, adapter=peft.LoraConfig(r=2))[1] == []


def test_search_s_scratch_candidate_drops_the_adapter_settings(data, pretrained):
    clf = TransferClassifier(
        copy.deepcopy(pretrained),
        head="head",
        adapter="lora",
        lora_rank=2,
        lora_alpha=4.0,
        max_epochs=1,
        random_state=0,
    )
    search = make_transfer_search(clf, probe=False, cv=2, random_state=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        search.fit(*data)
    assert [str(w.message) for w in record if "lora_" in str(w.message)] == []
    scratch = search.cv_results_["params"][-1]["model"]
    assert scratch.adapter is None
    assert scratch.lora_rank == 8


def test_adapter_file_of_another_scale_is_refused(data, pretrained, tmp_path):
    X, y = data
    clf, _ = fitted(pretrained, X, y, adapter="lora", lora_rank=2, lora_alpha=8)
    path = tmp_path / "a.safetensors"
    clf.save_adapter(path)
    other = TransferClassifier(
        copy.deepcopy(pretrained), head="head", adapter="lora", lora_rank=2
    )
    with pytest.raises(ValueError, match=r"lora_alpha=8\.0 \(rank 2\).*lora_alpha=2"):
        other.load_adapter(path)
    assert not hasattr(other, "net_")  # left unchanged
    same = other.set_params(lora_alpha=8.0).load_adapter(path)
    np.testing.assert_array_equal(same.predict_proba(X), clf.predict_proba(X))


class GroupedNet(nn.Module):
    """A convolution, a grouped one (groups=2) and a linear head."""

    def __init__(self, n_outputs=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, groups=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


def test_rank_a_grouped_convolution_cannot_take_is_named():
    X = np.random.default_rng(0).normal(size=(12, 1, 4, 4)).astype(np.float32)
    y = np.arange(12) % 3
    with pytest.raises(
        ValueError,
        match=r"lora_rank=3 cannot adapt the grouped convolutions 'features.2' "
        r"\(groups=2\).*multiple of 2, or leave these layers out",
    ):
        TransferClassifier(GroupedNet(), head="head", adapter="lora", lora_rank=3).fit(
            X, y
        )
    # An even rank adapts it; so does leaving it out.
    even, _ = fitted(GroupedNet(), X, y, adapter="lora", lora_rank=2)
    assert even.adapter_["layers"] == ["features.0", "features.2"]
    odd, _ = fitted(
        GroupedNet(), X, y, adapter="lora", lora_rank=3, frozen="features.2.*"
    )
    assert odd.adapter_["layers"] == ["features.0"]


def test_an_adapter_on_fresh_weights_is_refused_and_nothing_changes(data, pretrained):
    # pretrained=False with adapter="lora" froze a random base and trained a
    # low-rank update of it, in silence.
    X, y = data
    clf, _ = fitted(pretrained, X, y, adapter="lora")
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match=r"adapter='lora'.*pretrained=False"):
        clf.set_params(pretrained=False).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    search = make_transfer_search(clf.set_params(pretrained=True), cv=2)
    search.fit(X, y)  # its scratch candidate drops the adapter
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
