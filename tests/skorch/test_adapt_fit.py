"""What one adapting fit installs: balanced batches, labelled validation, BatchNorm."""

import warnings

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from torch import nn
from torch.utils.data import Subset

from sktransfer import TransferClassifier
from sktransfer._skorch import _adapt_fit

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
    """An optional input BatchNorm, a body and an output layer."""

    def __init__(self, norm=False):
        super().__init__()
        self.norm = nn.BatchNorm1d(6, momentum=None) if norm else nn.Identity()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.out = nn.Linear(8, 3)

    def forward(self, X):
        return self.out(self.body(self.norm(X)))


class Batches(Callback):
    """Records the encoded targets of every training batch."""

    def initialize(self):
        self.seen = []
        return self

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.seen.append(batch[1].clone())


def _fit(X, y_marked, method="coral", **net_kwargs):
    net = tiny_classifier_net(Tiny(), callbacks=[("batches", Batches())], **net_kwargs)
    clf = TransferClassifier(
        net, head=None, adapt=method, adapt_layer="body", random_state=0
    )
    clf.fit(X, y_marked)
    return clf, dict(clf.net_.callbacks_)["batches"]


@pytest.mark.parametrize("method", ["coral", "dann"])
def test_every_training_batch_holds_both_kinds(shifted, method):
    X, _, y_marked = shifted
    clf, recorder = _fit(X, y_marked, method, max_epochs=2, batch_size=32)
    per_epoch = len(recorder.seen) // 2
    assert per_epoch == 6  # ceil(180 / 32)
    for yb in recorder.seen:  # the overall proportion in each batch
        assert int((yb == -1).sum()) == 10
        assert int((yb != -1).sum()) == 20
    # An epoch still visits every row once: 120 labelled, 60 unlabelled.
    epoch = torch.cat(recorder.seen[:per_epoch])
    assert int((epoch == -1).sum()) == 60
    assert int((epoch != -1).sum()) == 120


def test_few_unlabelled_rows_are_drawn_again(shifted):
    # 5 unlabelled rows, 4 batches: each batch gets 2 of them (8 draws).
    X, _, y_marked = shifted
    keep = np.r_[np.arange(120), np.arange(120, 125)]
    clf, recorder = _fit(X[keep], y_marked[keep], max_epochs=1, batch_size=32)
    assert len(recorder.seen) == 4
    for yb in recorder.seen:
        assert int((yb == -1).sum()) == 2
    assert sum(int((yb != -1).sum()) for yb in recorder.seen) == 120


def test_loader_alone_respects_a_subset():
    # A split's training Subset: only its rows, each once, both kinds per batch.
    y = np.r_[np.zeros(40, dtype=np.int64), -np.ones(20, dtype=np.int64)]
    X = np.arange(60, dtype=np.float32).reshape(60, 1)
    rows = np.r_[np.arange(0, 40, 2), np.arange(40, 60, 2)]  # 20 + 10
    loader = _adapt_fit.DomainBalancedLoader(
        Subset(Dataset(X, y), rows), batch_size=8, shuffle=True
    )
    batches = list(loader)
    assert len(batches) == 4
    seen = np.sort(np.concatenate([Xb[:, 0].numpy() for Xb, _ in batches]))
    np.testing.assert_array_equal(seen, np.sort(rows).astype(np.float32))
    for _, yb in batches:
        assert (yb == -1).sum() >= 2
        assert (yb == 0).sum() >= 2


def test_valid_acc_scores_labelled_rows_only(shifted):
    # A split holding 30 labelled and 15 unlabelled rows: valid_acc is the
    # accuracy of the 30 labelled ones, and the 15 unlabelled ones train.
    X, y, y_marked = shifted
    valid = np.r_[np.arange(0, 120, 4), np.arange(120, 180, 4)]
    train = np.setdiff1d(np.arange(len(X)), valid)

    def split(dataset, y=None, groups=None):
        return Subset(dataset, train), Subset(dataset, valid)

    clf, recorder = _fit(X, y_marked, max_epochs=1, batch_size=64, train_split=split)
    labelled = valid[y_marked[valid] != -1]
    assert len(labelled) == 30
    expected = accuracy_score(y[labelled], clf.predict(X[labelled]))
    counted_all = accuracy_score(y_marked[valid], clf.predict(X[valid]))
    assert expected != pytest.approx(counted_all)
    assert clf.net_.history[-1, "valid_acc"] == pytest.approx(expected)
    seen = torch.cat(recorder.seen)
    assert int((seen == -1).sum()) == 60  # every unlabelled row trained
    assert int((seen != -1).sum()) == 120 - 30


def test_validation_loss_counts_labelled_rows_only(shifted):
    # With a validation split, the weighted validation loss (sample_weight)
    # and skorch's own (no weights) agree: unlabelled rows count in neither.
    X, _, y_marked = shifted
    kwargs = {"adapt": "coral", "early_stopping": True, "max_epochs": 2}
    kwargs["hidden_layer_sizes"] = (8,)
    plain = TransferClassifier(**kwargs, random_state=0).fit(X, y_marked)
    weighted = TransferClassifier(**kwargs, random_state=0).fit(
        X, y_marked, sample_weight=np.ones(len(X))
    )
    a = plain.net_.history[:, "valid_loss"]
    b = weighted.net_.history[:, "valid_loss"]
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_valid_split_of_unlabelled_rows_only_is_refused(shifted):
    X, _, y_marked = shifted

    def split(dataset, y=None, groups=None):
        return Subset(dataset, np.arange(150)), Subset(dataset, np.arange(150, 180))

    with pytest.raises(ValueError, match="all unlabelled"):
        _fit(X, y_marked, max_epochs=1, train_split=split)


def test_batchnorm_statistics_are_shared_by_the_domains(shifted):
    # One batch of all 180 rows, a BatchNorm on the inputs with a cumulative
    # average: its running mean is the mean of the mix, not of the source.
    X, _, y_marked = shifted
    torch.manual_seed(0)
    module = Tiny(norm=True)
    net = tiny_classifier_net(module, max_epochs=1, batch_size=len(X))
    clf = TransferClassifier(net, head=None, adapt="mmd", adapt_layer="body")
    clf.fit(X, y_marked)
    running = clf.net_.module_.norm.running_mean.numpy()
    np.testing.assert_allclose(running, X.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(running, X[:120].mean(axis=0), atol=0.1)


def test_other_iterator_is_refused(shifted):
    from torch.utils.data import DataLoader

    class MyLoader(DataLoader):
        pass

    X, _, y_marked = shifted
    net = tiny_classifier_net(Tiny(), iterator_train=MyLoader)
    clf = TransferClassifier(net, head=None, adapt="coral", adapt_layer="body")
    with pytest.raises(ValueError, match="iterator_train is 'MyLoader'"):
        clf.fit(X, y_marked)


def test_adabn_keeps_the_target_statistics(shifted):
    # AdaBN: after training, the input BatchNorm's running statistics are the
    # unlabelled rows' (mean, unbiased variance), which prediction then uses.
    X, _, y_marked = shifted
    torch.manual_seed(0)
    net = tiny_classifier_net(Tiny(norm=True), max_epochs=2, batch_size=256)
    clf = TransferClassifier(net, head=None, adapt="adabn", adapt_layer="body")
    clf.fit(X, y_marked)
    norm = clf.net_.module_.norm
    target = X[120:].astype(np.float64)
    np.testing.assert_allclose(norm.running_mean, target.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(norm.running_var, target.var(axis=0, ddof=1), rtol=1e-4)
    assert norm.momentum is None  # as built (Tiny uses a cumulative average)
    expected = clf.net_.module_.out(
        clf.net_.module_.body(
            (torch.as_tensor(X[120:]) - norm.running_mean)
            / torch.sqrt(norm.running_var + norm.eps)
            * norm.weight
            + norm.bias
        )
    ).argmax(dim=1)
    np.testing.assert_array_equal(clf.predict(X[120:]), expected.numpy())
    names = [name for name, _ in clf.net_.callbacks_]
    assert "adapt_target_statistics" not in names


def test_adabn_gives_a_frozen_normalisation_layer_the_target_statistics(shifted):
    # A frozen BatchNorm is held in evaluation mode while fine-tuning; AdaBN
    # reset its statistics and, held, never refilled them (mean 0, variance 1).
    X, _, y_marked = shifted
    torch.manual_seed(0)
    net = tiny_classifier_net(Tiny(norm=True), max_epochs=2, batch_size=256)
    clf = TransferClassifier(
        net,
        head=None,
        frozen="norm.*",
        cache_frozen=False,
        adapt="adabn",
        adapt_layer="body",
    )
    clf.fit(X, y_marked)
    norm = clf.net_.module_.norm
    target = X[120:].astype(np.float64)
    np.testing.assert_allclose(norm.running_mean, target.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(norm.running_var, target.var(axis=0, ddof=1), rtol=1e-4)
    # frozen: its affine weights kept their initial values
    np.testing.assert_array_equal(norm.weight.detach().numpy(), np.ones(6))


def test_adabn_on_a_network_without_running_statistics_is_said(shifted):
    X, _, y_marked = shifted
    net = tiny_classifier_net(Tiny(), max_epochs=1)
    clf = TransferClassifier(net, head=None, adapt="adabn", adapt_layer="body")
    with pytest.warns(UserWarning, match="adapt='adabn' cannot act"):
        clf.fit(X, y_marked)


@pytest.mark.parametrize("method", ["coral", "mmd", "dann"])
def test_an_alignment_term_that_can_move_no_weight_is_said(method):
    # With every layer before adapt_layer frozen, the term has no gradient to
    # give: the fit equals adapt_weight=0 and a search over it ties. Said.
    X, y = make_classification(
        120, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    y[80:] = -1

    def fit(frozen, weight):
        torch.manual_seed(0)
        net = tiny_classifier_net(_TwoStage(), max_epochs=2, batch_size=40)
        clf = TransferClassifier(
            net,
            head=("out",),
            frozen=frozen,
            adapt=method,
            adapt_weight=weight,
            cache_frozen=False,
            random_state=0,
        )
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            clf.fit(X, y)
        said = [w for w in record if "cannot act" in str(w.message)]
        return clf.predict_proba(X), said

    frozen_10, said = fit(("body.*",), 10.0)
    frozen_0, _ = fit(("body.*",), 0.0)
    np.testing.assert_array_equal(frozen_10, frozen_0)  # the term moved nothing
    assert len(said) == 1
    assert f"adapt={method!r} cannot act" in str(said[0].message)
    assert "adapt_layer" in str(said[0].message)
    assert said[0].filename == __file__
    trainable_10, said = fit((), 10.0)
    trainable_0, _ = fit((), 0.0)
    assert np.abs(trainable_10 - trainable_0).max() > 1e-4  # here it acts
    assert said == []


class _TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.out = nn.Linear(8, 3)

    def forward(self, X):
        return self.out(self.body(X))


def test_adabn_says_that_adapt_weight_has_no_effect(shifted):
    # AdaBN adapts at any weight: adapt_weight=0 is not "no adaptation".
    X, _, y_marked = shifted

    def fit(weight):
        torch.manual_seed(0)
        net = tiny_classifier_net(Tiny(norm=True), max_epochs=1, batch_size=256)
        clf = TransferClassifier(
            net, head=None, adapt="adabn", adapt_weight=weight, adapt_layer="body"
        )
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            clf.fit(X, y_marked)
        said = [
            w for w in record if "has no effect with adapt='adabn'" in str(w.message)
        ]
        return clf.net_.module_.norm.running_mean.numpy(), said

    at_zero, said = fit(0.0)
    at_one, quiet = fit(1.0)
    np.testing.assert_array_equal(at_zero, at_one)
    np.testing.assert_allclose(at_zero, X[120:].mean(axis=0), rtol=1e-4)
    assert len(said) == 1
    assert quiet == []
    assert said[0].filename == __file__
