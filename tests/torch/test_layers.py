"""The pure torch functions behind head, frozen and weight transfer."""

import pickle

import pytest
import torch
from nets import ConvNet, FixedOutputNet, tiny_classifier_net
from torch import nn

from sktransfer import MLP, TransferClassifier
from sktransfer._torch._held import hold_frozen_layers, is_held
from sktransfer._torch._layers import check_patterns, match_parameters, resolve_head
from sktransfer._torch._probe import output_shape
from sktransfer._torch._transfer import (
    freeze,
    reset_head,
    resize_head,
    transfer_weights,
)


def test_check_patterns_accepts_strings_and_sequences():
    assert check_patterns("features.*", "frozen") == ("features.*",)
    assert check_patterns(["a", "b"], "frozen") == ("a", "b")
    assert check_patterns((), "frozen") == ()


@pytest.mark.parametrize("bad", [3, ["a", 1], None, {"a"}])
def test_check_patterns_rejects_other_types(bad):
    with pytest.raises(TypeError, match="frozen must be a string or a list/tuple"):
        check_patterns(bad, "frozen")


def test_match_parameters_globs_over_named_parameters():
    module = MLP(n_features_in=4, n_outputs=2, hidden_layer_sizes=(3, 3))
    assert match_parameters(module, ["features.*"]) == [
        "features.1.weight",
        "features.1.bias",
        "features.3.weight",
        "features.3.bias",
    ]
    assert match_parameters(module, ["*.bias", "head.weight"]) == [
        "features.1.bias",
        "features.3.bias",
        "head.weight",
        "head.bias",
    ]


def test_match_parameters_names_the_nearest_parameters_for_a_typo():
    module = MLP(n_features_in=4, n_outputs=2)
    with pytest.raises(ValueError, match=r"'feature.1.weight' matches no parameter"):
        match_parameters(module, ["feature.1.weight"])
    with pytest.raises(ValueError, match=r"Did you mean 'features.1.weight'"):
        match_parameters(module, ["feature.1.weight"])


def test_resolve_head_auto_is_the_last_linear_layer():
    assert resolve_head(MLP(n_features_in=4, n_outputs=2), "auto") == ("head",)
    assert resolve_head(ConvNet(), "auto") == ("head.2",)
    assert resolve_head(ConvNet(), "head") == ("head",)
    assert resolve_head(ConvNet(), ["head.0", "head.2"]) == ("head.0", "head.2")
    assert resolve_head(ConvNet(), None) == ()


def test_resolve_head_errors_name_the_submodules():
    with pytest.raises(ValueError, match=r"head='haed' is not a submodule.*'head'"):
        resolve_head(ConvNet(), "haed")
    convs = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="head='auto' found no nn.Linear"):
        resolve_head(convs, "auto")
    with pytest.raises(ValueError, match="found no nn.Linear"):
        resolve_head(nn.Linear(2, 2), "auto")  # the root module itself is no head


def test_transfer_weights_copies_shared_layers_and_skips_the_head():
    source, target = ConvNet(n_outputs=5), ConvNet(n_outputs=3)
    with torch.no_grad():
        source.features[1].running_mean.fill_(0.5)
    copied = transfer_weights(target, source.state_dict(), skip=("head",))
    assert "features.1.running_mean" in copied
    assert not any(key.startswith("head") for key in copied)
    for key, value in target.features.state_dict().items():
        assert torch.equal(value, source.features.state_dict()[key])
    assert not torch.equal(target.head[0].weight, source.head[0].weight)


def test_transfer_weights_names_every_mismatch_and_copies_nothing():
    source = MLP(n_features_in=8, n_outputs=2, hidden_layer_sizes=(5,))
    target = MLP(n_features_in=4, n_outputs=2, hidden_layer_sizes=(5,))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = dict(source.state_dict())
    del state["features.1.bias"]
    with pytest.raises(
        ValueError, match=r"'features.1.weight' has shape \(5, 4\)"
    ) as e:
        transfer_weights(target, state, skip=("head",))
    assert "'features.1.bias' is missing" in str(e.value)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key])


def test_reset_head_reinitialises_only_the_head():
    module = ConvNet()
    features = {k: v.clone() for k, v in module.features.state_dict().items()}
    head = {k: v.clone() for k, v in module.head.state_dict().items()}
    reset_head(module, ("head",))
    for key, value in module.features.state_dict().items():
        assert torch.equal(value, features[key])
    for key, value in module.head.state_dict().items():
        assert not torch.equal(value, head[key])


def test_resize_head_replaces_the_last_linear_layer():
    module = FixedOutputNet()
    assert resize_head(module, ("out",), 3) == "out"
    assert module.out.out_features == 3
    assert module.out.in_features == 16
    assert module(torch.zeros(2, 64)).shape == (2, 3)
    assert resize_head(module, ("out",), 3) is None  # already the right size

    conv = ConvNet(n_outputs=10)
    assert resize_head(conv, ("head",), 4) == "head.2"
    assert conv.head[0].out_features == 16  # earlier head layers keep their size
    assert output_shape(conv, torch.zeros(2, 1, 8, 8)) == (4,)


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    module = ConvNet()
    frozen = match_parameters(module, ["features.*"])
    freeze(module, frozen)
    assert hold_frozen_layers(module, frozen) == ["features"]
    assert is_held(module.features[1])
    module.train()
    stats = module.features[1].running_mean.clone()
    module(torch.randn(8, 1, 8, 8) * 3 + 1)
    assert torch.equal(module.features[1].running_mean, stats)
    assert all(not p.requires_grad for p in module.features.parameters())
    assert all(p.requires_grad for p in module.head.parameters())

    # The hook is a module-level function, so the network still pickles.
    clone = pickle.loads(pickle.dumps(module))
    clone.train()
    clone(torch.randn(8, 1, 8, 8) + 5)
    assert torch.equal(clone.features[1].running_mean, stats)


def test_partly_frozen_batchnorm_keeps_training():
    module = ConvNet()
    frozen = match_parameters(module, ["features.0.*", "features.1.weight"])
    assert hold_frozen_layers(module, frozen) == ["features.0"]
    assert not is_held(module.features[1])
    module.train()
    stats = module.features[1].running_mean.clone()
    module(torch.randn(8, 1, 8, 8) + 1)
    assert not torch.equal(module.features[1].running_mean, stats)


def test_batchnorm_without_parameters_follows_its_block():
    module = nn.Sequential(
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False)),
        nn.Linear(4, 2),
    )
    assert hold_frozen_layers(module, ["0.0.weight", "0.0.bias"]) == ["0"]
    assert is_held(module[0][1])
    module.train()
    module(torch.randn(8, 3) + 2)
    assert torch.equal(module[0][1].running_mean, torch.zeros(4))
    other = nn.Sequential(
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False)),
        nn.Linear(4, 2),
    )
    assert hold_frozen_layers(other, ["0.0.weight"]) == []
    assert not is_held(other[0][1])
    other.train()
    other(torch.randn(8, 3) + 2)
    assert not torch.equal(other[0][1].running_mean, torch.zeros(4))


def test_output_shape_restores_the_training_mode_and_explains_bad_input():
    module = ConvNet(n_outputs=3)
    module.train()
    stats = module.features[1].running_mean.clone()
    assert output_shape(module, torch.randn(4, 1, 8, 8)) == (3,)
    assert module.training
    assert module.features[1].training
    assert torch.equal(module.features[1].running_mean, stats)
    with pytest.raises(
        ValueError,
        match=r"failed on a batch of 2 training samples of shape \(1, 5, 5\)",
    ):
        output_shape(module, torch.zeros(2, 1, 5, 5))


class HeldPosition(nn.Module):
    """A tensor held by a module without ``reset_parameters`` (as a ViT's pos_embed)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pos", torch.full((64,), 0.25))
        self.out = nn.Linear(64, 10)

    def forward(self, X):
        return self.out(X + self.pos)


def test_training_an_instance_from_scratch_names_what_keeps_its_values(digits):
    clf = TransferClassifier(tiny_classifier_net(HeldPosition()), pretrained=False)
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) .* 'pos'") as record:
        clf.fit(digits.X_target, digits.y_target)
    assert len(record) == 1
    assert record[0].filename == __file__  # at the user's call
    assert torch.equal(clf.net_.module_.pos, torch.full((64,), 0.25))


def test_a_frozen_head_warns_at_the_users_call(digits):
    clf = TransferClassifier(tiny_classifier_net(), frozen=("features.*", "head.bias"))
    with pytest.warns(UserWarning, match=r"freezes parameters of the head") as record:
        clf.fit(digits.X_target, digits.y_target)
    assert [w.filename for w in record] == [__file__]
