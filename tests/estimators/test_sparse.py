"""Sparse input: densified a batch at a time, and the same fit as dense input."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from sktransfer import MLP, TransferClassifier, TransferRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _net(cls=NeuralNetClassifier, **params):
    criterion = nn.CrossEntropyLoss if cls is NeuralNetClassifier else nn.MSELoss
    settings = {
        "criterion": criterion,
        "max_epochs": 4,
        "lr": 0.05,
        "batch_size": 16,
        "train_split": None,
        "module__hidden_layer_sizes": (8,),
        "iterator_train__shuffle": True,
    }
    return cls(MLP, **{**settings, **params})


def _params(estimator):
    return [p.detach().clone() for p in estimator.net_.module_.parameters()]


def _sparse_digits(digits):
    X = digits.X_target.copy()
    X[X < 0.5] = 0  # mostly zeros, as one-hot or tf-idf features are
    return X


@pytest.mark.parametrize("fmt", [sp.csr_matrix, sp.csc_matrix, sp.csr_array])
def test_a_sparse_fit_equals_the_dense_fit_bit_for_bit(digits, fmt):
    X, y = _sparse_digits(digits), digits.y_target
    dense = TransferClassifier(_net(), random_state=0).fit(X, y)
    sparse = TransferClassifier(_net(), random_state=0).fit(fmt(X), y)
    for a, b in zip(_params(dense), _params(sparse), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(dense.predict_proba(X), sparse.predict_proba(fmt(X)))
    reg_dense = TransferRegressor(_net(NeuralNetRegressor), random_state=0)
    reg_sparse = TransferRegressor(_net(NeuralNetRegressor), random_state=0)
    target = X[:, :2] + y[:, None]
    reg_dense.fit(X, target, sample_weight=y - 4)
    reg_sparse.fit(fmt(X), target, sample_weight=y - 4)
    np.testing.assert_array_equal(reg_dense.predict(X), reg_sparse.predict(fmt(X)))


def test_pretraining_and_a_cached_frozen_stage_take_sparse_input(digits):
    X_source = digits.X_source.copy()
    X_source[X_source < 0.5] = 0
    X, y = _sparse_digits(digits), digits.y_target
    fits = []
    for convert in (np.asarray, sp.csr_matrix):
        clf = TransferClassifier(_net(), frozen="features.*", random_state=0)
        clf.fit_source(convert(X_source), digits.y_source).fit(convert(X), y)
        assert clf.frozen_cache_["cached"]
        fits.append(_params(clf))
    for a, b in zip(*fits, strict=True):
        assert torch.equal(a, b)


def test_rows_are_densified_one_batch_at_a_time(digits, monkeypatch):
    X, y = sp.csr_matrix(_sparse_digits(digits)), digits.y_target
    densified = []
    toarray = sp.csr_matrix.toarray

    def recording(self, *args, **kwargs):
        densified.append(self.shape[0])
        return toarray(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", recording)
    clf = TransferClassifier(_net(batch_size=16), random_state=0).fit(X, y)
    clf.predict(X)
    assert densified, "the sparse rows never reached the network"
    # Training batches of 16 rows; probes of the new network take at most 8.
    assert max(densified) == 16 < X.shape[0]


def test_a_pipeline_with_a_one_hot_encoder_trains_on_its_sparse_output():
    rng = np.random.RandomState(0)
    X = rng.choice(["a", "b", "c", "d"], size=(120, 3))
    y = (X[:, 0] == "a") | (X[:, 1] == "b")
    fits = []
    for sparse_output in (True, False):
        pipe = make_pipeline(
            OneHotEncoder(sparse_output=sparse_output),
            TransferClassifier(_net(max_epochs=30), random_state=0),
        )
        fits.append(pipe.fit(X, y))
    assert sp.issparse(fits[0][0].transform(X[:2]))
    for a, b in zip(_params(fits[0][-1]), _params(fits[1][-1]), strict=True):
        assert torch.equal(a, b)
    assert fits[0].score(X, y) > 0.9
