"""Multilabel classification: per-label sigmoids, indicator predictions."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import make_multilabel_classification
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import MLP, TransferClassifier

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def multilabel():
    X, Y = make_multilabel_classification(
        240, n_features=12, n_classes=4, random_state=0
    )
    return (X / X.max()).astype(np.float32), Y


def _net(**params):
    settings = {
        "criterion": nn.BCEWithLogitsLoss,
        "max_epochs": 30,
        "lr": 0.05,
        "batch_size": 32,
        "train_split": None,
        "module__hidden_layer_sizes": (16,),
        "iterator_train__shuffle": True,
    }
    return NeuralNetClassifier(MLP, **{**settings, **params})


def test_indicator_y_trains_per_label_sigmoids_and_predicts_indicator_rows(
    multilabel,
):
    X, Y = multilabel
    clf = TransferClassifier(random_state=0).fit(X[:160], Y[:160])
    assert isinstance(clf.net_.criterion_, nn.BCEWithLogitsLoss)
    assert clf.out_activation_ == "sigmoid"
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    logits = clf.decision_function(X[160:])
    with torch.no_grad():
        expected = clf.net_.module_(torch.as_tensor(X[160:])).double().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-6)
    proba = clf.predict_proba(X[160:])
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-expected)), rtol=1e-6)
    np.testing.assert_allclose(clf.predict_log_proba(X[160:]), np.log(proba), rtol=1e-6)
    pred = clf.predict(X[160:])
    assert pred.shape == (80, 4)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    # Better than predicting each label's majority value for every sample.
    majority = np.tile(Y[:160].mean(axis=0) > 0.5, (80, 1))
    assert (pred == Y[160:]).mean() > (majority == Y[160:]).mean() + 0.05


def test_source_and_target_may_have_other_label_sets(multilabel):
    X, Y = multilabel
    clf = TransferClassifier(_net(), random_state=0)
    clf.fit_source(X, Y[:, :3])  # 3 labels at the source
    np.testing.assert_array_equal(clf.source_classes_, np.arange(3))
    clf.fit(X[:100], Y[:100])  # 4 at the target: the head is rebuilt
    # Each label by hand: the rebuilt 4-output head's logit above zero.
    module = copy.deepcopy(clf.net_.module_).eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(X[:20])).numpy()
    assert logits.shape == (20, 4)
    np.testing.assert_array_equal(clf.predict(X[:20]), (logits > 0).astype(int))
    shared = [n for n in clf.source_weights_ if not n.startswith("head")]
    assert shared
    # The shared layers start from the source: not the fit of a fresh network.
    scratch = TransferClassifier(_net(), random_state=0).fit(X[:100], Y[:100])
    fitted, fresh = clf.net_.module_.state_dict(), scratch.net_.module_.state_dict()
    assert not any(torch.equal(fitted[n], fresh[n]) for n in shared)
    # A multiclass target after a multilabel source: a softmax head.
    # The default network picks its criterion by the y of each phase.
    single = TransferClassifier(MLP, random_state=0).fit_source(X, Y[:, :3])
    labels = Y[:100].argmax(axis=1)
    single.fit(X[:100], labels)
    assert single.out_activation_ == "softmax"
    assert set(single.predict(X)) <= set(labels)


def test_a_multilabel_y_needs_bce_with_logits(multilabel):
    X, Y = multilabel
    clf = TransferClassifier(_net(criterion=nn.CrossEntropyLoss))
    with pytest.raises(
        ValueError, match=r"net__criterion=torch\.nn\.BCEWithLogitsLoss"
    ):
        clf.fit(X, Y)
    assert not hasattr(clf, "net_")
    with pytest.raises(ValueError, match="multiclass-multioutput is not supported"):
        TransferClassifier().fit(X, Y + 2 * Y[:, :1])
    with pytest.raises(ValueError, match="holds 0 and 1"):
        TransferClassifier().fit(X, Y * 2)
    with pytest.raises(ValueError, match="a multilabel y trains with fit"):
        TransferClassifier(_net()).partial_fit(X, Y, classes=[0, 1])
    with pytest.raises(ValueError, match="criterion of a multilabel y"):
        TransferClassifier(_net()).fit(X, Y[:, 0])
