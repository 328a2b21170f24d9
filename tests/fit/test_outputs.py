"""What the classifier's network outputs: checked before training, used right after."""

import functools

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.metrics import get_scorer, roc_auc_score
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import MLP, TransferClassifier
from sktransfer._fit._outputs import check_probe


class SoftmaxConvNet(ConvNet):
    """ConvNet whose forward ends in a softmax: it outputs probabilities."""

    def forward(self, X):
        return torch.softmax(super().forward(X), dim=-1)


class LogSoftmaxConvNet(ConvNet):
    """ConvNet whose forward ends in a log-softmax: it outputs log-probabilities."""

    def forward(self, X):
        return torch.log_softmax(super().forward(X), dim=-1)


class FocalLoss(nn.Module):
    """A focal loss on logits, written as users write it (not a CrossEntropyLoss)."""

    def __init__(self, gamma=2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, y):
        log_p = torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).squeeze(1)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()


class SmoothedCrossEntropy(nn.CrossEntropyLoss):
    """A user's subclass of CrossEntropyLoss: still logits."""

    def __init__(self):
        super().__init__(label_smoothing=0.1)


def _module_outputs(clf, X):
    """The fitted module's outputs for X, computed here in eval mode."""
    module = clf.net_.module_.eval()
    with torch.no_grad():
        return module(torch.as_tensor(X, dtype=torch.float32)).double()


def _image_net(module, **kwargs):
    params = {"max_epochs": 3, "lr": 0.01, "batch_size": 32, "train_split": None}
    params.update(kwargs)
    return NeuralNetClassifier(module, optimizer=torch.optim.Adam, **params)


@pytest.fixture(scope="module")
def margin_task():
    """Issue case 2: four normal features, the class is the sign of the first."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 4)).astype(np.float32)
    return X, X[:, 0] > 0


def _margin_net(**kwargs):
    return NeuralNetClassifier(
        nn.Sequential(nn.Linear(4, 2)),
        criterion=nn.MultiMarginLoss,
        optimizer=torch.optim.Adam,
        lr=0.05,
        max_epochs=30,
        train_split=None,
        **kwargs,
    )


# ------------------------------------------------- case 1: NLLLoss on logits


def test_skorch_default_nllloss_on_a_logits_module_is_refused_before_training(
    digit_images,
):
    # skorch's NeuralNetClassifier defaults to NLLLoss and takes the log of the
    # outputs: on logits that trained on NaN losses to a chance-level score.
    d = digit_images
    clf = TransferClassifier(_image_net(ConvNet), random_state=0)
    with pytest.raises(ValueError, match=r"criterion=NLLLoss.*look like logits.*"):
        clf.fit(d.X_target, d.y_target)
    assert not hasattr(clf, "net_")
    with pytest.raises(ValueError, match=r"criterion=torch\.nn\.CrossEntropyLoss"):
        clf.fit_source(d.X_source, d.y_source)
    assert not hasattr(clf, "_pretrained")
    # The message's fix works: the same network under CrossEntropyLoss trains.
    fixed = _image_net(ConvNet, criterion=nn.CrossEntropyLoss)
    fitted = TransferClassifier(fixed, random_state=0).fit(d.X_target, d.y_target)
    assert np.isfinite(fitted.net_.history[:, "train_loss"]).all()


def test_nllloss_on_a_softmax_module_trains_and_returns_its_probabilities(
    digit_images,
):
    d = digit_images
    clf = TransferClassifier(_image_net(SoftmaxConvNet), random_state=0)
    clf.fit(d.X_target, d.y_target)
    losses = clf.net_.history[:, "train_loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert clf.out_activation_ == "probabilities"
    by_hand = _module_outputs(clf, d.X_test).numpy()
    proba = clf.predict_proba(d.X_test)
    np.testing.assert_allclose(proba, by_hand, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(
        clf.predict(d.X_test), clf.classes_[by_hand.argmax(axis=1)]
    )


def test_nllloss_on_a_log_softmax_module_is_refused(digit_images):
    # The PyTorch idiom LogSoftmax + NLLLoss breaks under skorch, which takes a
    # log again; CrossEntropyLoss takes log-probabilities as they are.
    d = digit_images
    clf = TransferClassifier(_image_net(LogSoftmaxConvNet), random_state=0)
    with pytest.raises(ValueError, match=r"look like log-probabilities.*Entropy"):
        clf.fit(d.X_target, d.y_target)


def test_cross_entropy_on_a_softmax_module_is_refused(digit_images):
    d = digit_images
    net = _image_net(SoftmaxConvNet, criterion=nn.CrossEntropyLoss)
    clf = TransferClassifier(net, random_state=0)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*probabilities already"):
        clf.fit(d.X_target, d.y_target)


# ------------------------------------- case 2: a criterion without a softmax


def test_multi_margin_loss_predicts_the_argmax_of_the_outputs(margin_task):
    X, y = margin_task
    clf = TransferClassifier(_margin_net(), random_state=0).fit(X, y)
    out = _module_outputs(clf, X).numpy()
    by_hand = clf.classes_[out.argmax(axis=1)]
    np.testing.assert_array_equal(clf.predict(X), by_hand)
    assert clf.score(X, y) == pytest.approx(np.mean(by_hand == y))
    assert clf.score(X, y) > 0.85  # the issue saw 0.35 from normalised scores
    assert clf.out_activation_ == "scores"
    # Scores define no probabilities: no predict_proba, as SVC(probability=False).
    assert not hasattr(clf, "predict_proba")
    assert not hasattr(clf, "predict_log_proba")
    with pytest.raises(AttributeError, match="predict_proba") as info:
        clf.predict_proba(X)
    assert "criterion=MultiMarginLoss" in str(info.value.__cause__)
    fix = "net__predict_nonlinearity=functools.partial(torch.softmax, dim=-1)"
    assert fix in str(info.value.__cause__)
    # decision_function: the score of classes_[1], which roc_auc ranks by.
    score = out[:, 1] - out[:, 0]
    np.testing.assert_allclose(clf.decision_function(X), score, rtol=1e-12)
    auc = get_scorer("roc_auc")(clf, X, y)
    assert auc == pytest.approx(roc_auc_score(y, score))


def test_availability_of_predict_proba_is_known_before_fit():
    # GridSearchCV, VotingClassifier(voting="soft") ask hasattr on unfitted clones.
    assert hasattr(TransferClassifier(), "predict_proba")
    assert not hasattr(TransferClassifier(_margin_net()), "predict_proba")
    logits_as_is = tiny_classifier_net(predict_nonlinearity=None)
    assert not hasattr(TransferClassifier(logits_as_is), "predict_proba")
    softmax = _margin_net(predict_nonlinearity=functools.partial(torch.softmax, dim=-1))
    assert hasattr(TransferClassifier(softmax), "predict_proba")


def test_a_users_focal_loss_predicts_the_argmax_of_its_logits(margin_task):
    # Another criterion skorch maps to no softmax: the same kind as case 2.
    X, y = margin_task
    net = tiny_classifier_net(
        MLP, criterion=FocalLoss, max_epochs=20, module__hidden_layer_sizes=(8,)
    )
    clf = TransferClassifier(net, random_state=0).fit(X, y)
    out = _module_outputs(clf, X).numpy()
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[out.argmax(axis=1)])
    assert not hasattr(clf, "predict_proba")
    # With the nonlinearity that matches its logits, probabilities are defined.
    softmax = functools.partial(torch.softmax, dim=-1)  # what the message says
    clf.set_params(net__predict_nonlinearity=softmax).fit(X, y)
    out = _module_outputs(clf, X)
    np.testing.assert_allclose(
        clf.predict_proba(X), torch.softmax(out, dim=1).numpy(), rtol=1e-5
    )
    assert clf.out_activation_ == "predict_nonlinearity"


def test_a_nonlinearity_that_gives_no_distribution_is_refused(margin_task):
    X, y = margin_task
    net = _margin_net(predict_nonlinearity=torch.sigmoid)
    with pytest.raises(ValueError, match=r"predict_nonlinearity=sigmoid.*not to 1"):
        TransferClassifier(net, random_state=0).fit(X, y)


# -------------------------------------------- CrossEntropyLoss: logits


def test_predict_proba_is_the_softmax_of_the_logits(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit(digits.X_target, digits.y_target)
    assert clf.out_activation_ == "softmax"
    out = _module_outputs(clf, digits.X_test)
    np.testing.assert_allclose(
        clf.predict_proba(digits.X_test), torch.softmax(out, 1).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        clf.predict_log_proba(digits.X_test),
        torch.log_softmax(out, 1).numpy(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        clf.decision_function(digits.X_test), out.numpy(), rtol=1e-6
    )
    np.testing.assert_array_equal(
        clf.predict(digits.X_test), clf.classes_[out.numpy().argmax(axis=1)]
    )


def test_a_cross_entropy_subclass_is_read_as_logits(margin_task):
    X, y = margin_task
    net = tiny_classifier_net(criterion=SmoothedCrossEntropy)
    clf = TransferClassifier(net, random_state=0).fit(X, y)
    assert clf.out_activation_ == "softmax"
    out = _module_outputs(clf, X)
    np.testing.assert_allclose(
        clf.predict_proba(X), torch.softmax(out, 1).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("criterion", [nn.BCEWithLogitsLoss, nn.BCELoss])
def test_binary_cross_entropy_is_refused_with_what_to_use(margin_task, criterion):
    X, y = margin_task
    clf = TransferClassifier(tiny_classifier_net(criterion=criterion))
    with pytest.raises(ValueError, match=r"criterion=torch\.nn\.CrossEntropyLoss"):
        clf.fit(X, y)


# ---------------------------------------------------------------- the probe


def test_the_probe_changes_no_buffer_mode_or_random_state(digit_images):
    net = _image_net(SoftmaxConvNet, criterion=nn.NLLLoss).initialize()
    module = net.module_.train()
    buffers = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    check_probe(net, torch.as_tensor(digit_images.X_target[:8]))
    assert all(torch.equal(buffers[k], v) for k, v in module.state_dict().items())
    assert all(sub.training for sub in module.modules())
    assert torch.equal(torch.get_rng_state(), rng)
