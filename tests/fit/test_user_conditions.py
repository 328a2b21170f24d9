"""The network sees the user's data and conditions (issue 18, cases 1, 2, 7, 11).

Each test compares sktransfer with plain skorch on the same module, data and
seed: the transfer estimator, given a module instance with ``head=None`` (its
weights are the pretrained ones, nothing is re-initialised), must train to
bit-identical weights. Plain skorch is the reference because the user's data,
network and settings are what it trains on unchanged.
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from scipy import sparse
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn
from torch.nn import functional as F

from sktransfer import TransferClassifier, TransferRegressor, make_transfer_search

SETTINGS = {
    "criterion": nn.CrossEntropyLoss,
    "optimizer": torch.optim.SGD,
    "lr": 0.1,
    "max_epochs": 3,
    "batch_size": 8,
    "train_split": None,
    "iterator_train__shuffle": True,
    "verbose": 0,
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skorch's device notes
        yield


def _seed(random_state, phase):
    """The torch seed sktransfer's ``fit`` (1) or ``fit_source`` (0) trains under.

    ``fit`` builds the net under offset 1, then reseeds training with offset 5
    (so that training draws the same numbers whatever building drew).
    """
    high = np.iinfo(np.int32).max
    offset = {0: 0, 1: 5}[phase]
    return int(np.random.RandomState(random_state).randint(high)) + offset


def plain_skorch(module, X, y, *, phase=1, **settings):
    """Train ``module`` with plain skorch, seeded as sktransfer seeds ``fit``."""
    torch.manual_seed(_seed(0, phase))
    net = NeuralNetClassifier(copy.deepcopy(module), **{**SETTINGS, **settings})
    return net.fit(X, y)


def transfer(module, **settings):
    """A TransferClassifier training ``module`` as it is (no head rebuilt)."""
    net = NeuralNetClassifier(copy.deepcopy(module), **{**SETTINGS, **settings})
    return TransferClassifier(net, head=None, random_state=0)


def same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def ids(n=40, width=2, high=10, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randint(0, high, size=(n, width))
    return X, (X.sum(axis=1) % 2).astype(np.int64)


def embedding_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))


# ---------------------------------------------------------------- case 1: dtypes


def test_integer_ids_reach_an_embedding_as_int64_as_in_plain_skorch():
    X, y = ids()
    module = embedding_net()
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert clf._input_dtype == np.int64
    assert same_weights(clf.net_.module_, reference.module_)
    np.testing.assert_allclose(
        clf.predict_proba(X), reference.predict_proba(X), rtol=1e-6, atol=1e-7
    )
    # int32 ids at prediction are the same indices.
    np.testing.assert_array_equal(clf.predict(X.astype(np.int32)), clf.predict(X))


def test_fit_source_pretrains_an_embedding_on_integer_ids():
    X, y = ids()
    module = embedding_net()
    reference = plain_skorch(module, X, y, phase=0)
    clf = TransferClassifier(
        NeuralNetClassifier(copy.deepcopy(module), **SETTINGS), random_state=0
    ).fit_source(X, y)
    state = reference.module_.state_dict()
    assert all(torch.equal(clf.source_weights_[k], state[k]) for k in state)
    # Fine-tuning on integer ids from those weights works too.
    assert clf.fit(X, y).score(X, y) > 0.5


def test_ids_on_disk_stream_to_an_embedding_as_int64(tmp_path):
    X, y = ids()
    disk = np.memmap(tmp_path / "ids.dat", dtype=np.int16, mode="w+", shape=X.shape)
    disk[:] = X
    disk.flush()
    disk = np.memmap(tmp_path / "ids.dat", dtype=np.int16, mode="r", shape=X.shape)

    def pretrain(data):
        clf = TransferClassifier(
            NeuralNetClassifier(embedding_net(), **SETTINGS), random_state=0
        )
        return clf.fit_source(data, y).source_weights_

    streamed, in_memory = pretrain(disk), pretrain(X)
    assert all(torch.equal(streamed[k], in_memory[k]) for k in in_memory)


def test_a_float64_module_trains_on_float64_data_as_in_plain_skorch():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert clf._input_dtype == np.float64
    assert same_weights(clf.net_.module_, reference.module_)
    # float32 data goes to the float64 network exactly.
    np.testing.assert_array_equal(
        clf.predict_proba(X.astype(np.float32)),
        clf.predict_proba(X.astype(np.float32).astype(np.float64)),
    )


def test_integers_a_float32_network_cannot_hold_are_refused():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 100, size=(40, 3)).astype(np.int64)
    y = (X[:, 0] > 50).astype(np.int64)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    # Below 2**24 integers are exact in float32: the same fit as float data.
    exact = transfer(module).fit(X, y)
    floats = transfer(module).fit(X.astype(np.float32), y)
    assert same_weights(exact.net_.module_, floats.net_.module_)
    big = X.copy()
    big[3, 1] = 2**24 + 1
    clf = transfer(module)
    match = r"1 integer\(s\) of magnitude above 2\*\*24 \(largest magnitude 16777217\)"
    with pytest.raises(ValueError, match=match):
        clf.fit(big, y)
    assert not hasattr(clf, "net_")
    with pytest.raises(ValueError, match=r"16777217"):
        exact.predict(big)
    # Converting on purpose is the user's choice, and accepted.
    clf.fit(big.astype(np.float32), y)


def test_embedding_bag_takes_integer_ids_everywhere():
    # Variant: another index layer, through fit, partial_fit, a validation set,
    # sparse input and prediction.
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = nn.EmbeddingBag(10, 4, mode="mean")
            self.out = nn.Linear(4, 2)

        def forward(self, X):
            return self.out(self.bag(X))

    X, y = ids(width=3)
    torch.manual_seed(0)
    module = Bag()
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert same_weights(clf.net_.module_, reference.module_)
    # A validation set of ids is given to the network as ids too.
    valid = Dataset(X[:10].astype(np.int32), y[:10])
    clf_valid = transfer(module, train_split=predefined_split(valid)).fit(X, y)
    assert np.isfinite(clf_valid.net_.history[-1, "valid_loss"])
    # partial_fit continues on ids.
    partial = transfer(module)
    partial.partial_fit(X, y, classes=[0, 1])
    partial.partial_fit(X, y)
    # Floats that are not ids are refused by name; integral floats are ids.
    with pytest.raises(ValueError, match=r"takes X as int64 indices"):
        clf.predict(X + 0.5)
    np.testing.assert_array_equal(clf.predict(X.astype(np.float64)), clf.predict(X))
    # A sparse matrix of ids densifies to the same indices.
    sp = transfer(module).fit(sparse.csr_matrix(X), y)
    assert same_weights(sp.net_.module_, reference.module_)


def test_integer_ids_through_the_frozen_stage_cache_and_transform():
    # A frozen embedding is a cached stage: it computes its outputs from the
    # int64 ids once, and training on them gives the uncached fit's weights.
    X, y = ids(n=60)
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    cached = transfer(module).set_params(frozen="0.*", cache_frozen=True).fit(X, y)
    plain = transfer(module).set_params(frozen="0.*", cache_frozen=False).fit(X, y)
    assert cached.frozen_cache_["cached"]
    assert same_weights(cached.net_.module_, plain.net_.module_)
    np.testing.assert_array_equal(cached.predict_proba(X), plain.predict_proba(X))
    features = cached.set_params(head="4").transform(X)
    assert features.shape == (60, 8)
    assert len(cached.get_feature_names_out()) == 8


def test_an_error_of_the_module_is_reported_as_its_own():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(3, 2)

        def forward(self, X):
            if X.shape[1] != 5:
                msg = "Picky takes 5 features, got something else"
                raise RuntimeError(msg)
            return self.out(X)

    X = np.random.RandomState(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match="Picky takes 5 features") as info:
        TransferClassifier(Picky()).fit(X, y)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "head" not in str(info.value)  # no guess about the head
    # Float ids for an embedding: the module's error, and what it was given.
    with pytest.raises(ValueError, match=r"dtype float32.*integer indices"):
        transfer(embedding_net()).fit(ids()[0].astype(np.float32), ids()[1])


# ------------------------------------------------- case 2: the user's conditions


class SqueezedNet(nn.Module):
    """A backbone ending in ``.squeeze()``: a one-sample batch loses a dimension."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, X):
        return self.fc(torch.relu(self.body(X))).squeeze()


class PooledBatchNorm(nn.Module):
    """A small CNN normalising its pooled features by the batch (1x1 per channel)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, X):
        h = self.bn(self.pool(torch.relu(self.conv(X.reshape(-1, 1, 2, 2)))))
        return self.fc(h.flatten(1))


def _tabular(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize(
    "make",
    [
        SqueezedNet,
        lambda: nn.Sequential(
            nn.Linear(4, 8),
            nn.BatchNorm1d(8, track_running_stats=False),
            nn.ReLU(),
            nn.Linear(8, 2),
        ),
        PooledBatchNorm,  # variant: another layer that needs more than one sample
    ],
    ids=["squeeze", "batchnorm-no-running-stats", "pooled-batchnorm2d"],
)
def test_networks_that_need_a_real_batch_train_as_in_plain_skorch(make):
    X, y = _tabular()
    torch.manual_seed(0)
    module = make()
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert same_weights(clf.net_.module_, reference.module_)


def test_checks_leave_no_trace_on_statistics_or_random_numbers():
    # BatchNorm's running statistics and dropout's random numbers: the checks
    # run in training mode, and must change neither.
    X, y = _tabular()
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)
    )
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert same_weights(clf.net_.module_, reference.module_)  # buffers included
    # A head rebuilt by sktransfer is sized on such a network as well.
    rebuilt = TransferClassifier(copy.deepcopy(module), random_state=0)
    rebuilt.fit(X, np.arange(40) % 3)
    assert rebuilt.predict_proba(X).shape == (40, 3)


# --------------------------------------------------- case 7: -inf as probability 0


class Masked(nn.Module):
    """Logits with -inf on a class that column 0 of the input rules out."""

    def __init__(self, log_softmax=False):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.log_softmax = log_softmax

    def forward(self, X):
        logits = self.fc(X)
        ruled_out = F.one_hot(X[:, 0].long(), 3).bool()
        logits = logits.masked_fill(ruled_out, float("-inf"))
        return F.log_softmax(logits, dim=1) if self.log_softmax else logits


def _masked_data(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    X[:, 0] = rng.randint(0, 3, size=60)  # the class ruled out
    y = ((X[:, 0] + 1 + (X[:, 1] > 0)) % 3).astype(np.int64)  # never ruled out
    return X, y


@pytest.mark.parametrize("log_softmax", [False, True], ids=["logits", "log-softmax"])
def test_minus_infinity_logits_are_probability_zero_as_in_plain_skorch(log_softmax):
    X, y = _masked_data()
    torch.manual_seed(0)
    module = Masked(log_softmax)
    reference = plain_skorch(module, X, y)
    clf = transfer(module).fit(X, y)
    assert same_weights(clf.net_.module_, reference.module_)
    proba = clf.predict_proba(X)
    ruled_out = X[:, 0].astype(int)
    assert np.all(proba[np.arange(60), ruled_out] == 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(clf.predict(X), reference.predict(X))


def test_probabilities_of_zero_under_nll_loss_train_as_in_plain_skorch():
    # Variant: the NLLLoss route, a module that outputs probabilities.
    class MaskedProba(Masked):
        def forward(self, X):
            return F.softmax(super().forward(X), dim=1)

    X, y = _masked_data()
    torch.manual_seed(0)
    module = MaskedProba()
    reference = plain_skorch(module, X, y, criterion=nn.NLLLoss)
    clf = transfer(module, criterion=nn.NLLLoss).fit(X, y)
    assert same_weights(clf.net_.module_, reference.module_)
    assert np.all(clf.predict_proba(X)[np.arange(60), X[:, 0].astype(int)] == 0)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), "all-minus-inf"], ids=["nan", "+inf", "all"]
)
def test_nan_plus_infinity_or_no_possible_class_still_stop_the_fit(value):
    class Broken(Masked):
        # Training is fine; the trained network's outputs are not.
        def forward(self, X):
            out = super().forward(X)
            if self.training:
                return out
            if value == "all-minus-inf":
                return out.masked_fill(torch.ones_like(out, dtype=bool), -np.inf)
            return out.masked_fill(torch.arange(3) == 1, value)

    X, y = _masked_data()
    clf = transfer(Broken())
    with pytest.raises(ValueError, match=r"outputs NaN or infinity on 8 of 8"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


# ----------------------------------------------- case 11: frozen names a layer


class HeldBatchNorm(nn.BatchNorm1d):
    """BatchNorm that always normalises with its running statistics (the reference)."""

    def forward(self, X):
        return F.batch_norm(
            X, self.running_mean, self.running_var, None, None, False, 0.0, self.eps
        )


def _normed(norm):
    torch.manual_seed(0)
    return nn.Sequential(norm, nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("pattern", ["0", "[0]"])
def test_frozen_holds_a_parameter_free_top_level_norm_layer(pattern):
    X, y = _tabular()
    X = 3 * X + 1  # statistics far from the initial ones
    module = _normed(nn.BatchNorm1d(4, affine=False))
    with torch.no_grad():  # pretrained statistics
        module[0].running_mean.fill_(0.5)
        module[0].running_var.fill_(2.0)
    before = {k: v.clone() for k, v in module[0].state_dict().items()}
    clf = transfer(module)
    clf.set_params(frozen=pattern).fit(X, y)
    after = clf.net_.module_[0].state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    # It trained as a network whose norm layer always uses those statistics.
    held = _normed(HeldBatchNorm(4, affine=False))
    held.load_state_dict(module.state_dict())
    reference = plain_skorch(held, X, y)
    assert same_weights(clf.net_.module_, reference.module_)
    # Without naming it, its statistics adapt to the target, as before.
    free = transfer(module).fit(X, y)
    assert not torch.equal(free.net_.module_[0].running_mean, before["running_mean"])


def test_frozen_names_any_parameter_free_layer_and_still_refuses_unknown_names():
    # Variant: InstanceNorm with running statistics is held too; LayerNorm
    # without parameters has nothing to hold and is accepted.
    X, y = _tabular()
    module = nn.Sequential(
        nn.Unflatten(1, (1, 4)),
        nn.InstanceNorm1d(1, track_running_stats=True),
        nn.Flatten(),
        nn.LayerNorm(4, elementwise_affine=False),
        nn.Linear(4, 2),
    )
    before = module[1].running_mean.clone()
    clf = transfer(module).set_params(frozen=("1", "3")).fit(X, y)
    assert torch.equal(clf.net_.module_[1].running_mean, before)
    assert clf.net_.module_[1].num_batches_tracked == 0
    # make_transfer_search takes the same names among its frozen settings.
    search = make_transfer_search(transfer(module), frozen=[(), ("1", "3")])
    assert search.param_grid[0]["model__frozen"] == [(), ("1", "3")]
    with pytest.raises(ValueError, match=r"pattern '7' matches no tensor"):
        make_transfer_search(transfer(module), frozen=["7"])
    named = TransferClassifier(_normed(nn.BatchNorm1d(4, affine=False)), frozen="bnn")
    with pytest.raises(ValueError, match=r"matches no parameter or submodule"):
        named.fit(X, y)
    norm = nn.Sequential()
    norm.add_module("bn", nn.BatchNorm1d(4, affine=False))
    norm.add_module("fc", nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"Did you mean 'bn'"):
        TransferClassifier(norm, frozen="bnn").fit(X, y)


# ------------------------------------------- the user's array is never changed


class _ScalesInPlace(nn.Module):
    """Divides its input in place, as some users' preprocessing does."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        x /= 4.0
        return self.layer(x)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_network_changing_its_input_in_place_trains_as_in_plain_skorch(shuffle):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4)).astype(np.float32) * 4
    y = (X[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    module = _ScalesInPlace()
    settings = {"iterator_train__shuffle": shuffle}
    reference = plain_skorch(module, X.copy(), y, **settings)
    mine = X.copy()
    clf = transfer(module, **settings).fit(mine, y)
    np.testing.assert_array_equal(mine, X)  # the user's array is untouched
    assert same_weights(clf.net_.module_, reference.module_)
    before = X.copy()
    np.testing.assert_allclose(
        clf.predict_proba(before),
        reference.predict_proba(X.copy()),
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_array_equal(before, X)


def test_arrays_with_negative_strides_are_taken_as_plain_skorch_takes_them():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 2))
    reference = plain_skorch(module, X[::-1], y[::-1])
    clf = transfer(module).fit(X[::-1], y[::-1])
    assert same_weights(clf.net_.module_, reference.module_)
    np.testing.assert_allclose(
        clf.predict_proba(X[::-1]),
        reference.predict_proba(X[::-1]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_a_regressor_with_one_number_per_sample_is_told_to_keep_the_column():
    class Squeezed(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def forward(self, x):
            return self.layer(x).squeeze()

    X = np.random.RandomState(0).normal(size=(20, 4)).astype(np.float32)
    y = X[:, 0].astype(np.float64)
    reg = TransferRegressor(Squeezed(), max_epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"shape \(\) per sample.*\.squeeze\(\)"):
        reg.fit(X, y)
    assert not hasattr(reg, "net_")
