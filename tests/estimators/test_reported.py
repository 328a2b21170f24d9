"""Cases a new user found after the first round of checks, each with its right value."""

import io

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net, tiny_regressor_net
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, mean_squared_error
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

from sktransfer import TransferClassifier, TransferRegressor


def _source_module_outputs(clf, X):
    """The pretrained network's outputs on ``X``, computed by hand from its weights."""
    net = clf._template().set_params(verbose=0)
    net.set_params(**clf._module_sizes(net, X, len(clf.source_classes_)))
    module = net.initialize().module_
    module.load_state_dict(clf.source_weights_)
    module.eval()
    with torch.no_grad():
        return module(torch.as_tensor(X)).numpy()


@pytest.mark.parametrize("labels", [np.arange(1, 6), np.array(list("abcde"))])
def test_pretraining_validation_set_gets_the_source_encoding(digits, labels):
    X, y = digits.X_source, labels[digits.y_source]
    X_val, y_val = X[300:400], y[300:400]
    keep = y_val != labels[-1]  # one class absent from the validation set
    X_val, y_val = X_val[keep], y_val[keep]
    split = predefined_split(Dataset(X_val, y_val))
    clf = TransferClassifier(
        tiny_classifier_net(), source_params={"train_split": split}, random_state=0
    ).fit_source(X[:300], y[:300])
    out = _source_module_outputs(clf, X_val)
    expected = accuracy_score(y_val, clf.source_classes_[out.argmax(axis=1)])
    assert clf.source_history_[-1]["valid_acc"] == pytest.approx(expected, abs=1e-12)


def test_target_validation_set_in_pretraining_is_a_value_error(digits):
    split = predefined_split(Dataset(digits.X_target, digits.y_target))
    clf = TransferClassifier(tiny_classifier_net(train_split=split), random_state=0)
    with pytest.raises(ValueError, match=r"labels \[5, 6, 7, 8, 9\]"):
        clf.fit_source(digits.X_source, digits.y_source)
    assert not hasattr(clf, "_pretrained")


def test_regressor_pretraining_validation_of_1d_targets_is_the_mse(digits):
    rng = np.random.RandomState(0)
    X = digits.X_source[:200]
    y = (X @ rng.normal(size=64)).astype(np.float32)
    split = predefined_split(Dataset(X[150:], y[150:]))
    reg = TransferRegressor(  # raw targets: the loss is the MSE on their scale
        tiny_regressor_net(),
        source_params={"train_split": split},
        normalize_y=False,
        random_state=0,
    ).fit_source(X[:150], y[:150])
    net = reg._template().set_params(verbose=0, module__n_features_in=64)
    module = net.set_params(module__n_outputs=1).initialize().module_
    module.load_state_dict(reg.source_weights_)
    with torch.no_grad():
        pred = module.eval()(torch.as_tensor(X[150:])).numpy().ravel()
    expected = mean_squared_error(y[150:], pred)
    assert reg.source_history_[-1]["valid_loss"] == pytest.approx(expected, rel=1e-5)


def test_a_diverged_fit_with_a_finite_loss_is_a_value_error(digit_images):
    d = digit_images
    losses = _RecordLoss.losses = []  # the template's callbacks are cloned
    net = tiny_classifier_net(
        _PooledNet,
        lr=1e3,
        optimizer=torch.optim.SGD,
        max_epochs=5,
        callbacks=[_RecordLoss()],
    )
    # A seed whose fit overflows (lr=1e3 diverges at every seed, to infinity at
    # about half of them).
    clf = TransferClassifier(net, head="head", random_state=2)
    with pytest.raises(ValueError, match=r"outputs NaN or infinity on \d+ of 8"):
        clf.fit(d.X_target, d.y_target)
    assert not hasattr(clf, "net_")
    # The loss grew but stayed finite: the non-finite-loss check did not fire.
    assert len(losses) == 5
    assert np.isfinite(losses).all()
    assert losses[-1] > 1e6 * losses[0]


class _RecordLoss(Callback):
    losses: list = []

    def on_epoch_end(self, net, **kwargs):
        self.losses.append(net.history[-1, "train_loss"])


class _PooledNet(nn.Module):
    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


class _LazyNet(nn.Module):
    def __init__(self, n_outputs=2):
        super().__init__()
        self.features = nn.Sequential(
            nn.LazyConv2d(4, 3),
            nn.LazyBatchNorm2d(),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


def test_lazy_layers_transfer_and_stay_frozen(digit_images):
    d = digit_images
    net = tiny_classifier_net(_LazyNet, max_epochs=2)
    clf = TransferClassifier(net, head="head", frozen="features.*", random_state=0)
    clf.fit_source(d.X_source, d.y_source).fit(d.X_target, d.y_target)
    fitted = clf.net_.module_.state_dict()
    for key, value in clf.source_weights_.items():
        if key.startswith("features."):
            assert torch.equal(fitted[key], value), key
    buffer = io.BytesIO()
    clf.save_source(buffer)
    buffer.seek(0)
    loaded = TransferClassifier(net, head="head", frozen="features.*", random_state=0)
    loaded.load_source(buffer).fit(d.X_target, d.y_target)
    np.testing.assert_array_equal(
        loaded.predict_proba(d.X_target), clf.predict_proba(d.X_target)
    )


def test_compile_in_the_template_is_refused(digits):
    net = tiny_classifier_net(compile=True)
    with pytest.raises(ValueError, match="compile=True"):
        TransferClassifier(net).fit(digits.X_target, digits.y_target)


def test_load_source_after_fit_leaves_the_estimator_unfitted(digits):
    a = TransferClassifier(tiny_classifier_net(), random_state=0)
    a.fit(digits.X_target, digits.y_target)
    b = TransferClassifier(tiny_classifier_net(), random_state=0)
    b.fit_source(digits.X_source, digits.y_source)
    a.load_source(b)
    with pytest.raises(NotFittedError):
        a.predict(digits.X_target)


def test_sigmoid_outputs_under_nll_are_named_as_no_distribution(digits):
    module = nn.Sequential(nn.Linear(64, 5), nn.Sigmoid())
    net = NeuralNetClassifier(module, max_epochs=1, train_split=None)
    with pytest.raises(ValueError, match=r"not to 1: no distribution"):
        TransferClassifier(net, head=None).fit(digits.X_target, digits.y_target)


class _PositionNet(nn.Module):
    """A network with a top-level parameter and buffer, like a ViT's pos_embed."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(64))
        self.register_buffer("mu", torch.zeros(64))
        self.features = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, X):
        return self.head(self.features(X - self.mu + self.pos))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 1 epoch
def test_pretrained_false_names_the_tensors_it_cannot_reset(digits):
    module = _PositionNet()
    with torch.no_grad():
        module.pos.fill_(7.0)
        module.mu.fill_(3.0)
        pretrained_layer = module.features[0].weight.clone()
    clf = TransferClassifier(module, pretrained=False, max_epochs=1, random_state=0)
    with pytest.warns(UserWarning, match=r"2 tensor\(s\).*'pos', 'mu'"):
        clf.fit(digits.X_source, digits.y_source)
    # The layers with reset_parameters start afresh; the two named ones do not.
    fitted = clf.net_.module_
    assert not torch.allclose(fitted.features[0].weight, pretrained_layer, atol=0.05)
    assert torch.equal(fitted.mu, torch.full((64,), 3.0))


def test_l2sp_with_pretrained_false_says_so(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit_source(digits.X_source, digits.y_source)
    clf.set_params(pretrained=False, l2sp=1.0)
    with pytest.raises(ValueError, match=r"pretrained=False starts from fresh"):
        clf.fit(digits.X_target, digits.y_target)


def test_tta_views_without_augment_is_refused_before_training(digits):
    clf = TransferClassifier(tiny_classifier_net(), tta_views=4)
    with pytest.raises(ValueError, match=r"tta_views=4 .* augment=None"):
        clf.fit(digits.X_target, digits.y_target)
    assert not hasattr(clf, "net_")


def test_partial_fit_holds_nothing_out_for_early_stopping(digits):
    clf = TransferClassifier(tiny_classifier_net(), early_stopping=True)
    classes = np.unique(digits.y_target)
    clf.partial_fit(digits.X_target, digits.y_target, classes=classes)
    epoch = clf.net_.history[-1]
    assert "valid_loss" not in epoch
    assert sum(b["train_batch_size"] for b in epoch["batches"]) == 50


class _UnusedLastLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(64, 5)
        self.unused = nn.Linear(64, 5)  # defined last: head="auto" picks it

    def forward(self, X):
        return self.used(X)


def test_a_head_that_forward_never_calls_is_refused(digits):
    clf = TransferClassifier(tiny_classifier_net(_UnusedLastLinear), random_state=0)
    with pytest.raises(ValueError, match=r"forward never calls 'unused'"):
        clf.fit_source(digits.X_source, digits.y_source)
    # Naming the layer that makes the output works.
    clf.set_params(head="used").fit_source(digits.X_source, digits.y_source)
    assert clf.fit(digits.X_target, digits.y_target).head_ == ("used",)
    assert not clf.net_.module_.used._forward_hooks
