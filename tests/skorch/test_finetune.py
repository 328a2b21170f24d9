"""L2-SP, discriminative learning rates and gradual unfreezing."""

import pickle

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback
from torch import nn

from sktransfer import MLP, TransferClassifier
from sktransfer._skorch._finetune import L2SPLoss


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained MLP classifier (clone it before fitting)."""
    net = tiny_classifier_net(max_epochs=5)
    clf = TransferClassifier(net, random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


@pytest.fixture(scope="module")
def pretrained_cnn(digit_images):
    net = tiny_classifier_net(ConvNet, max_epochs=4)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    return clf.fit_source(digit_images.X_source, digit_images.y_source)


def _state(estimator):
    return estimator.net_.module_.state_dict()


def _drift(estimator, source, names):
    state = _state(estimator)
    return sum(float((state[n] - source[n]).pow(2).sum()) for n in names)


SHARED = ("features.1.weight", "features.1.bias")


# ------------------------------------------------------------------ L2-SP


def test_l2sp_keeps_shared_weights_closer_to_the_source(pretrained, digits):
    plain = clone(pretrained).set_params(net__max_epochs=10)
    plain.fit(digits.X_target, digits.y_target)
    pulled = clone(plain).set_params(l2sp=1.0).fit(digits.X_target, digits.y_target)
    source = pretrained.source_weights_
    assert _drift(pulled, source, SHARED) < 0.5 * _drift(plain, source, SHARED)
    assert _drift(pulled, source, SHARED) > 0  # still fine-tuned


def test_l2sp_zero_is_bit_identical_to_not_setting_it(pretrained, digits):
    default = clone(pretrained).fit(digits.X_target, digits.y_target)
    zero = clone(pretrained).set_params(l2sp=0.0, l2sp_head=0.0)
    zero.fit(digits.X_target, digits.y_target)
    for key, value in _state(default).items():
        assert torch.equal(value, _state(zero)[key])
    assert default.net_.history[:, "train_loss"] == zero.net_.history[:, "train_loss"]
    assert "get_loss" not in vars(zero.net_)


def test_l2sp_head_shrinks_the_head(pretrained, digits):
    plain = clone(pretrained).fit(digits.X_target, digits.y_target)
    shrunk = clone(pretrained).set_params(l2sp_head=5.0)
    shrunk.fit(digits.X_target, digits.y_target)
    norm = {
        name: float(_state(est)["head.weight"].norm())
        for name, est in (("plain", plain), ("shrunk", shrunk))
    }
    assert norm["shrunk"] < norm["plain"]


def test_the_penalty_is_half_alpha_squared_drift_and_only_while_training():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    shared, head = list(module[0].parameters()), list(module[1].parameters())

    class Net:
        def get_loss(self, y_pred, y_true, X=None, training=False):
            return torch.tensor(1.0)

    loss = L2SPLoss(Net(), shared, head, alpha=0.5, beta=0.1)
    assert loss.penalty().item() == pytest.approx(
        0.1 / 2 * sum(p.pow(2).sum().item() for p in head)
    )
    with torch.no_grad():
        module[0].weight.add_(2.0)
    expected = 0.5 / 2 * 4.0 * module[0].weight.numel() + 0.1 / 2 * sum(
        p.pow(2).sum().item() for p in head
    )
    assert loss.penalty().item() == pytest.approx(expected, rel=1e-5)
    assert float(loss(None, None, training=False)) == 1.0
    assert loss(None, None, training=True).item() == pytest.approx(1.0 + expected)
    # Frozen shared parameters do not move, so they add nothing.
    module[0].weight.requires_grad_(False)
    assert loss.penalty().item() < expected


def test_the_penalty_is_in_the_logged_training_loss(pretrained, digits):
    # One batch of SGD with lr=0: the weights never move, so the drift is 0
    # and l2sp changes nothing; the head's plain L2 term is added to the loss.
    base = clone(pretrained).set_params(
        net__optimizer=torch.optim.SGD, net__lr=0.0, net__max_epochs=1
    )
    plain = clone(base).fit(digits.X_target, digits.y_target)
    with_l2 = clone(base).set_params(l2sp=3.0, l2sp_head=2.0)
    with_l2.fit(digits.X_target, digits.y_target)
    head = _state(with_l2)
    penalty = (
        2.0
        / 2
        * float(head["head.weight"].pow(2).sum() + head["head.bias"].pow(2).sum())
    )
    assert with_l2.net_.history[-1, "train_loss"] == pytest.approx(
        plain.net_.history[-1, "train_loss"] + penalty, rel=1e-5
    )


def test_l2sp_needs_pretrained_weights(digits):
    clf = TransferClassifier(tiny_classifier_net(), l2sp=0.1)
    with pytest.raises(ValueError, match=r"l2sp=0\.1 pulls .* call fit_source"):
        clf.fit(digits.X_target, digits.y_target)
    assert not hasattr(clf, "net_")
    # A module instance holds pretrained weights of its own.
    module = MLP(64, 5, hidden_layer_sizes=(16,))
    TransferClassifier(tiny_classifier_net(module), l2sp=0.1).fit(
        digits.X_target, digits.y_target
    )


# ------------------------------------------------- discriminative learning rates


def _one_sgd_step(estimator, X, y, scale):
    est = clone(estimator).set_params(
        shared_lr_scale=scale,
        net__optimizer=torch.optim.SGD,
        net__lr=0.1,
        net__max_epochs=1,
        net__batch_size=len(X),
        net__iterator_train__shuffle=False,
    )
    return est.fit(X, y)


def test_shared_lr_scale_scales_the_shared_steps_only(pretrained, digits):
    X, y = digits.X_target, digits.y_target
    full, slow = (_one_sgd_step(pretrained, X, y, s) for s in (1.0, 0.1))
    source = pretrained.source_weights_
    for name in SHARED:
        full_step = _state(full)[name] - source[name]
        slow_step = _state(slow)[name] - source[name]
        torch.testing.assert_close(slow_step, 0.1 * full_step, rtol=1e-4, atol=1e-7)
    for name in ("head.weight", "head.bias"):
        torch.testing.assert_close(_state(slow)[name], _state(full)[name])


def test_shared_lr_scale_with_adam_moves_shared_weights_less(pretrained, digits):
    full = clone(pretrained).fit(digits.X_target, digits.y_target)
    slow = clone(pretrained).set_params(shared_lr_scale=0.1)
    slow.fit(digits.X_target, digits.y_target)
    source = pretrained.source_weights_
    shared_ratio = _drift(slow, source, SHARED) / _drift(full, source, SHARED)
    assert shared_ratio < 0.1
    groups = slow.net_.optimizer_.param_groups
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.001, 0.01])


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.AdamW])
def test_shared_lr_scale_keeps_skorchs_param_groups(pretrained, digits, optimizer):
    clf = clone(pretrained).set_params(
        shared_lr_scale=0.5,
        net__optimizer=optimizer,
        net__lr=0.01,
        net__optimizer__param_groups=[
            ("head.*", {"lr": 0.3}),
            ("features.1.bias", {"lr": 0.2}),
        ],
    )
    clf.fit(digits.X_target, digits.y_target)
    module = clf.net_.module_
    lr_of = {
        id(param): group["lr"]
        for group in clf.net_.optimizer_.param_groups
        for param in group["params"]
    }
    assert lr_of[id(module.head.weight)] == pytest.approx(0.3)
    assert lr_of[id(module.features[1].bias)] == pytest.approx(0.1)
    assert lr_of[id(module.features[1].weight)] == pytest.approx(0.005)
    assert isinstance(clf.net_.optimizer_, optimizer)


# ------------------------------------------------------------- unfreezing


class Recorder(Callback):
    """Record requires_grad and the weights at the end of each epoch."""

    def __init__(self, names):
        self.names = names

    def initialize(self):
        self.flags, self.weights = [], []
        return self

    def on_epoch_end(self, net, **kwargs):
        params = dict(net.module_.named_parameters())
        self.flags.append({n: params[n].requires_grad for n in self.names})
        state = net.module_.state_dict()
        self.weights.append({n: state[n].clone() for n in self.names})


def test_unfreeze_flips_requires_grad_at_the_right_epochs(pretrained_cnn, digit_images):
    names = ["features.0.weight", "features.1.weight", "features.1.running_mean"]
    recorder = Recorder(names[:2])
    clf = clone(pretrained_cnn).set_params(
        unfreeze=((2, "features.1.*"), (4, ("features.0.weight", "features.0.bias"))),
        net__max_epochs=4,
        net__callbacks=[("recorder", recorder)],
    )
    clf.fit(digit_images.X_target, digit_images.y_target)
    recorder = dict(clf.net_.callbacks_)["recorder"]
    flags = [[f[n] for n in names[:2]] for f in recorder.flags]
    assert flags == [[False, False], [False, True], [False, True], [True, True]]
    source = pretrained_cnn.source_weights_
    weights = recorder.weights
    # Still frozen: bit-identical until the epoch that unfreezes them.
    for epoch in range(3):
        assert torch.equal(weights[epoch]["features.0.weight"], source[names[0]])
    assert not torch.equal(weights[3]["features.0.weight"], source[names[0]])
    assert torch.equal(weights[0]["features.1.weight"], source[names[1]])
    assert not torch.equal(weights[1]["features.1.weight"], source[names[1]])
    # The BatchNorm layer trains again (batch statistics) once it unfreezes.
    assert not torch.equal(_state(clf)[names[2]], source[names[2]])
    assert not clf.frozen_cache_["cached"]
    assert "unfreeze trains features.0.weight" in clf.frozen_cache_["reason"]


def test_batchnorm_statistics_stay_until_unfrozen(pretrained_cnn, digit_images):
    clf = clone(pretrained_cnn).set_params(
        unfreeze=((3, "features.1.*"),), net__max_epochs=2
    )
    with pytest.warns(UserWarning, match="epoch 3, after the last one"):
        clf.fit(digit_images.X_target, digit_images.y_target)
    key = "features.1.running_mean"
    assert torch.equal(_state(clf)[key], pretrained_cnn.source_weights_[key])


def test_unfreezing_an_uncached_schedule_matches_plain_fine_tuning_after(
    pretrained_cnn, digit_images
):
    # Unfreezing everything at epoch 1 is fine-tuning with nothing frozen.
    X, y = digit_images.X_target, digit_images.y_target
    at_once = clone(pretrained_cnn).set_params(unfreeze=((1, "features.*"),)).fit(X, y)
    unfrozen = clone(pretrained_cnn).set_params(frozen=()).fit(X, y)
    for key, value in _state(at_once).items():
        torch.testing.assert_close(value, _state(unfrozen)[key])


def test_the_schedule_ends_with_fit(pretrained_cnn, digit_images):
    # The schedule is training-time state: after fit (and a pickle round trip)
    # net_ has no unfreezing callback and its module the flags it arrived with.
    clf = clone(pretrained_cnn).set_params(
        unfreeze=((3, "features.1.*"),), net__max_epochs=2
    )
    with pytest.warns(UserWarning, match="epoch 3, after the last one"):
        clf.fit(digit_images.X_target, digit_images.y_target)
    loaded = pickle.loads(pickle.dumps(clf))
    for fitted in (clf, loaded):
        assert "sktransfer_unfreeze" not in dict(fitted.net_.callbacks_)
        assert all(p.requires_grad for p in fitted.net_.module_.parameters())
    key = "features.1.running_mean"
    assert torch.equal(_state(loaded)[key], pretrained_cnn.source_weights_[key])


@pytest.mark.parametrize(
    ("unfreeze", "match"),
    [
        ("features.*", "'unfreeze' parameter of TransferClassifier must be"),
        (
            (3, "features.*"),
            r"Each step of unfreeze must be an \(epoch, patterns\) pair",
        ),
        (((0, "features.*"),), "must be a positive int .* got 0"),
        (((True, "features.*"),), "must be a positive int .* got True"),
        (((1.5, "features.*"),), "must be a positive int .* got 1.5"),
        (((2, "feature.*"),), "unfreeze pattern 'feature.*' matches no parameter"),
        (((2, ()),), r"The unfreeze step \(2, \(\)\) names no pattern"),
    ],
)
def test_bad_unfreeze_schedules_are_clear_errors(
    pretrained_cnn, digit_images, unfreeze, match
):
    clf = clone(pretrained_cnn).set_params(unfreeze=unfreeze)
    with pytest.raises(ValueError, match=match):
        clf.fit(digit_images.X_target, digit_images.y_target)
    assert not hasattr(clf, "net_")


def test_an_unfreeze_pattern_of_the_wrong_type_is_a_type_error(
    pretrained_cnn, digit_images
):
    clf = clone(pretrained_cnn).set_params(unfreeze=((2, 3),))
    with pytest.raises(TypeError, match="unfreeze must be a string or a list/tuple"):
        clf.fit(digit_images.X_target, digit_images.y_target)


# ----------------------------------------------------- scikit-learn machinery


@pytest.mark.parametrize(
    ("param", "value"),
    [("l2sp", -1.0), ("l2sp_head", "big"), ("shared_lr_scale", 0.0)],
)
def test_bad_values_are_rejected(pretrained, digits, param, value):
    clf = clone(pretrained).set_params(**{param: value})
    with pytest.raises(InvalidParameterError, match=param):
        clf.fit(digits.X_target, digits.y_target)


def test_new_parameters_grid_search_and_survive_clone_and_pickle(
    pretrained_cnn, digit_images
):
    params = {
        "l2sp": 0.01,
        "l2sp_head": 0.001,
        "shared_lr_scale": 0.5,
        "unfreeze": ((2, "features.*"),),
    }
    clf = clone(pretrained_cnn).set_params(**params)
    assert {k: clone(clf).get_params()[k] for k in params} == params
    search = GridSearchCV(
        clf,
        {
            "l2sp": [0.0, 0.1],
            "shared_lr_scale": [0.1, 1.0],
            "unfreeze": [None, ((2, "features.0.*"),)],
        },
        cv=2,
    ).fit(digit_images.X_target, digit_images.y_target)
    assert len(search.cv_results_["params"]) == 8
    best = search.best_estimator_
    assert best.source_weights_ is pretrained_cnn.source_weights_
    restored = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(
        restored.predict(digit_images.X_test), best.predict(digit_images.X_test)
    )
    assert "get_loss" not in vars(best.net_)


class DtypeRecorder(Callback):
    """Records the dtype of the first layer's output in the first training batch."""

    def on_train_begin(self, net, **kwargs):
        self.dtypes = []
        layer = next(m for m in net.module_.modules() if isinstance(m, nn.Linear))
        self.hook = layer.register_forward_hook(
            lambda module, args, out: self.dtypes.append(out.dtype)
        )

    def on_train_end(self, net, **kwargs):
        self.hook.remove()


def test_bfloat16_autocast_trains_in_bfloat16_and_keeps_float32_weights(digits):
    X, y = digits.X_target, digits.y_target
    fits = {}
    for autocast in (None, "bfloat16"):
        clf = TransferClassifier(
            tiny_classifier_net(max_epochs=20, callbacks=[("dtypes", DtypeRecorder())]),
            autocast=autocast,
            random_state=0,
        ).fit(X, y)
        fits[autocast] = clf
        recorder = dict(clf.net_.callbacks_)["dtypes"]
        expected = torch.float32 if autocast is None else torch.bfloat16
        assert recorder.dtypes[0] == expected
        assert all(p.dtype == torch.float32 for p in clf.net_.module_.parameters())
        losses = clf.net_.history[:, "train_loss"]
        assert losses[-1] < losses[0] / 2
    # Prediction runs in float32 and agrees closely with the float32 fit.
    low, full = fits["bfloat16"], fits[None]
    assert low.predict_proba(digits.X_test).dtype == np.float64
    agreement = np.mean(low.predict(digits.X_test) == full.predict(digits.X_test))
    assert agreement > 0.8


def test_an_unknown_autocast_is_refused(digits):
    clf = TransferClassifier(tiny_classifier_net(), autocast="float16")
    with pytest.raises(ValueError, match="'autocast' parameter .* must be"):
        clf.fit(digits.X_target, digits.y_target)
