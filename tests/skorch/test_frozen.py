"""One definition of frozen, no training-time state after fit, the cache's data path."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nets import ConvNet, equal_weights, tiny_classifier_net
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EpochScoring
from skorch.dataset import Dataset
from torch import nn
from torch.utils.data import default_collate

from sktransfer import TransferClassifier
from sktransfer._torch._held import hold_frozen_layers, is_held
from sktransfer._torch._layers import match_parameters


def _pretrained_convnet(n_outputs=10):
    """A ConvNet whose BatchNorm statistics are not the initial ones."""
    torch.manual_seed(1)
    module = ConvNet(n_outputs)
    with torch.no_grad():
        module.train()
        module(torch.rand(32, 1, 8, 8) * 2)
    return module


def _buffers(module, prefix):
    return {
        k: v.clone() for k, v in module.state_dict().items() if k.startswith(prefix)
    }


# ------------------------------------------- case 6: one definition of frozen


def test_parameters_frozen_by_hand_keep_their_batchnorm_statistics(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    module = _pretrained_convnet()
    module.features.requires_grad_(False)  # PyTorch's fine-tuning recipe
    before = _buffers(module, "features.")
    clf = TransferClassifier(tiny_classifier_net(module), random_state=0).fit(X, y)
    fitted = clf.net_.module_
    after = _buffers(fitted, "features.")
    # Weights and running statistics (mean, var, count) bit-identical.
    assert equal_weights(after, before)
    assert not torch.equal(fitted.head[0].weight, module.head[0].weight)
    # The hand-frozen flags are the user's: they stay; the head trains.
    assert not any(p.requires_grad for p in fitted.features.parameters())
    assert all(p.requires_grad for p in fitted.head.parameters())
    # Held by the same definition, the frozen stage is cached.
    assert clf.frozen_cache_["cached"]


class NormNet(nn.Module):
    """InstanceNorm with running statistics, and BatchNorm without parameters
    in a block of its own (whose parent has no parameters either)."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.InstanceNorm2d(2, affine=True, track_running_stats=True),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128, 8),
            nn.Sequential(nn.BatchNorm1d(8, affine=False)),
        )
        self.head = nn.Linear(8, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


@pytest.mark.parametrize("how", ["by hand", "by pattern"])
def test_other_normalisation_layers_of_a_frozen_part_keep_their_statistics(
    digit_images, how
):
    X, y = digit_images.X_target, digit_images.y_target
    torch.manual_seed(0)
    module = NormNet()
    with torch.no_grad():
        module.train()
        module(torch.rand(16, 1, 8, 8) + 1)
    frozen = "features.*"
    if how == "by hand":
        module.features.requires_grad_(False)
        frozen = ()
    before = _buffers(module, "features.")
    assert set(before) >= {"features.1.running_var", "features.5.0.running_mean"}
    clf = TransferClassifier(
        tiny_classifier_net(module), frozen=frozen, cache_frozen=False, random_state=0
    ).fit(X, y)
    assert equal_weights(_buffers(clf.net_.module_, "features."), before)


def test_a_parameterless_norm_layer_follows_its_nearest_block_with_parameters():
    module = nn.Sequential(
        nn.Sequential(nn.Linear(3, 4)),
        nn.Sequential(nn.BatchNorm1d(4, affine=False)),
        nn.Linear(4, 2),
    )
    assert hold_frozen_layers(module, ["0.0.weight", "0.0.bias"]) == ["0"]
    assert not is_held(module[1][0])
    nested = nn.Sequential(
        nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4, affine=False))),
        nn.Linear(4, 2),
    )
    frozen = match_parameters(nested, ["0.*"])
    assert hold_frozen_layers(nested, frozen) == ["0"]
    assert is_held(nested[0][1][0])
    # At the top level the enclosing module is the whole network: not frozen.
    top = nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.Linear(3, 2))
    assert hold_frozen_layers(top, ["1.weight"]) == []
    assert not is_held(top[0])


# ------------------------------------------------ case 5: nothing outlives fit


class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics, by hand."""

    def forward(self, X):
        return F.batch_norm(
            X, self.running_mean, self.running_var, self.weight, self.bias,
            False, 0.0, self.eps,
        )  # fmt: skip


def _no_hooks(module):
    return all(
        not (sub._forward_pre_hooks or sub._forward_hooks) for sub in module.modules()
    )


def test_no_training_state_outlives_fit_and_the_weights_are_those_of_eval_mode(
    digit_images,
):
    X, y = digit_images.X_target, digit_images.y_target
    module = _pretrained_convnet()
    params = {"frozen": "features.*", "cache_frozen": False, "random_state": 0}
    clf = TransferClassifier(tiny_classifier_net(module), **params).fit(X, y)
    # The reference holds BatchNorm in eval mode by its own forward, no hook.
    reference = copy.deepcopy(module)
    reference.features[1].__class__ = EvalBatchNorm2d
    ref = TransferClassifier(
        tiny_classifier_net(reference), freeze_bn_stats=False, **params
    ).fit(X, y)
    state = clf.net_.module_.state_dict()
    assert equal_weights(state, ref.net_.module_.state_dict())
    # The frozen part, statistics included, is the pretrained one bit for bit.
    assert equal_weights(
        _buffers(clf.net_.module_, "features."), _buffers(module, "features.")
    )
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))

    net = clf.net_
    assert "get_loss" not in vars(net)
    assert all(type(cb).__module__.startswith("skorch.") for _, cb in net.callbacks_)
    fitted = net.module_
    for plain in (fitted, copy.deepcopy(fitted), pickle.loads(pickle.dumps(fitted))):
        assert _no_hooks(plain)
        assert all(p.requires_grad for p in plain.parameters())
        plain.train()
        assert all(sub.training for sub in plain.modules())
        # In training mode BatchNorm updates its statistics, by hand:
        bn = plain.features[1]
        batch = torch.rand(8, 1, 8, 8)
        old = bn.running_mean.clone()
        with torch.no_grad():
            expected = 0.9 * old + 0.1 * plain.features[0](batch).mean((0, 2, 3))
            plain(batch)
        torch.testing.assert_close(bn.running_mean, expected)


def test_the_fitted_module_fine_tunes_again_with_nothing_frozen(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    first = TransferClassifier(
        tiny_classifier_net(_pretrained_convnet()), frozen="features.*", random_state=0
    ).fit(X, y)
    module = first.net_.module_
    # The route sktransfer's own error message gives for a trained net. One
    # full batch at lr=0: BatchNorm's update is the only change, by hand.
    again = TransferClassifier(
        tiny_classifier_net(
            module,
            lr=0.0,
            max_epochs=1,
            batch_size=len(X),
            iterator_train__shuffle=False,
        ),
        frozen=(),
        random_state=0,
    ).fit(X, y)
    bn = module.features[1]
    with torch.no_grad():
        batch_mean = module.features[0](torch.as_tensor(X)).mean((0, 2, 3))
    expected = 0.9 * bn.running_mean + 0.1 * batch_mean
    result = again.net_.module_.features[1].running_mean
    assert not torch.equal(result, bn.running_mean)
    torch.testing.assert_close(result, expected)


# ------------------------------------ case 4: the cache proves the data path


class FlipDataset(Dataset):
    """Flips each image left to right, recording the shapes it is given."""

    seen = []

    def transform(self, X, y):
        FlipDataset.seen.append(tuple(np.shape(X)))
        X, y = super().transform(X, y)
        return torch.flip(torch.as_tensor(X), (-1,)), y


def _noisy_collate(batch):
    _noisy_collate.seen.extend(tuple(X.shape) for X, _ in batch)
    X, y = default_collate(batch)
    return X + 0.01 * torch.randn_like(X), y


_noisy_collate.seen = []


class FlippingNet(NeuralNetClassifier):
    """A net class that augments in its training step (not a setting)."""

    seen = []

    def train_step_single(self, batch, **fit_params):
        X, y = batch
        FlippingNet.seen.append(tuple(X.shape[1:]))
        return super().train_step_single((torch.flip(X, (-1,)), y), **fit_params)


@pytest.mark.parametrize(
    ("net_params", "recorder", "reason"),
    [
        ({"dataset": FlipDataset}, FlipDataset.seen, "dataset FlipDataset"),
        (
            {"iterator_train__collate_fn": _noisy_collate},
            _noisy_collate.seen,
            "iterator_train__collate_fn",
        ),
        (
            {"module": None},  # stands for the NeuralNet subclass below
            FlippingNet.seen,
            "FlippingNet.train_step_single overrides",
        ),
    ],
    ids=["dataset", "collate_fn", "net subclass"],
)
def test_augmentation_on_the_data_path_sees_images_and_nothing_is_cached(
    digit_images, net_params, recorder, reason
):
    X, y = digit_images.X_target, digit_images.y_target
    module = _pretrained_convnet()
    if "module" in net_params:
        net = tiny_classifier_net(module)
        net = FlippingNet(**net.get_params(deep=False))
    else:
        net = tiny_classifier_net(module, **net_params)
    recorder.clear()
    clf = TransferClassifier(net, frozen="features.*", random_state=0).fit(X, y)
    assert not clf.frozen_cache_["cached"]
    assert reason in clf.frozen_cache_["reason"]
    assert set(recorder) == {(1, 8, 8)}
    with pytest.raises(ValueError, match=f"cannot be computed once: .*{reason}"):
        clf.set_params(cache_frozen=True).fit(X, y)


class Marked(Callback):
    """A callback that declares it neither reads samples nor the frozen stage."""

    _sktransfer_cache_safe = True


class InheritsTheMark(Marked):
    def on_epoch_end(self, net, **kwargs):
        net.module_.state_dict()


class Scoring(EpochScoring):
    def on_epoch_end(self, net, **kwargs):
        net.module_.state_dict()


@pytest.mark.parametrize(
    ("callback", "cached"),
    [(Marked(), True), (InheritsTheMark(), False), (Scoring("accuracy"), False)],
)
def test_only_callbacks_named_safe_are_trusted_with_the_cache(
    digit_images, callback, cached
):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(_pretrained_convnet(), callbacks=[("cb", callback)])
    clf = TransferClassifier(net, frozen="features.*", random_state=0).fit(X, y)
    assert clf.frozen_cache_["cached"] is cached
    if not cached:
        assert "the callback 'cb' may read or write" in clf.frozen_cache_["reason"]
