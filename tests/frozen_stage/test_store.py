"""Frozen-stage outputs shared row by row by the fits from one record, when right."""

import gc
import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, equal_weights, tiny_classifier_net
from scipy import sparse
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from torch import nn

import sktransfer
from sktransfer import TransferClassifier
from sktransfer._frozen_stage import _digests, _store


class LeakyConvNet(ConvNet):
    """ConvNet's weights, names and shapes, another activation in the frozen stage."""

    def __init__(self, n_outputs=10):
        super().__init__(n_outputs)
        self.features[2] = nn.LeakyReLU(0.5)


# Each test starts from an empty store and leaves the store's bound as it was.
pytestmark = pytest.mark.usefixtures("empty_frozen_store")


def _estimator(weights, module=ConvNet, **params):
    net = tiny_classifier_net(module, max_epochs=2)
    clf = TransferClassifier(net, frozen="features.*", random_state=0, **params)
    return clf.load_source(weights)


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clone(estimator).fit(X, y)


def _weights(estimator):
    return estimator.net_.module_.state_dict()


def test_second_fit_reuses_outputs_and_is_bit_identical(source_weights, digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)  # its clones share one record
    first = _fit(template, X, y)
    second = _fit(template, X, y)
    assert first.frozen_cache_["outputs"] == "computed"
    assert second.frozen_cache_["outputs"] == "reused"
    assert second.frozen_cache_["store"]["hits"] == 1
    assert equal_weights(_weights(first), _weights(second))
    # ... and bit-identical to a fit that computes them with no store at all.
    sktransfer.set_frozen_store_limit(0)
    alone = _fit(template, X, y)
    assert alone.frozen_cache_["outputs"] == "computed"
    assert sktransfer.frozen_store_info()["entries"] == 0
    assert equal_weights(_weights(alone), _weights(second))
    np.testing.assert_array_equal(alone.predict_proba(X), second.predict_proba(X))


def _perturbed(weights):
    changed = {name: value.clone() for name, value in weights.items()}
    changed["features.0.weight"][0, 0, 0, 0] += 1e-3
    return changed


@pytest.mark.parametrize("change", ["record", "same weights", "stage", "batches"])
def test_nothing_is_reused_when_a_part_of_the_key_differs(
    source_weights, digit_images, change
):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    _fit(template, X, y)
    other = template
    if change == "record":
        other = _estimator(_perturbed(source_weights))
    elif change == "same weights":  # reuse is by ownership, not by content
        other = _estimator(source_weights)
    elif change == "stage":
        other = clone(template).set_params(net__module=LeakyConvNet)
    else:  # the stage run in other batches
        other = clone(template).set_params(net__batch_size=16)
    got = _fit(other, X, y)
    assert got.frozen_cache_["outputs"] == "computed"
    sktransfer.set_frozen_store_limit(0)
    fresh = _fit(other, X, y)
    assert equal_weights(_weights(got), _weights(fresh))


def _stage_outputs(estimator, X):
    """The fitted estimator's frozen stage run by hand on ``X`` (a fresh pass)."""
    module = estimator.net_.module_
    with torch.no_grad():
        return module.features(torch.as_tensor(X)).numpy()


@pytest.mark.parametrize("change", ["row", "order", "more rows"])
def test_the_stage_runs_only_over_rows_not_stored(source_weights, digit_images, change):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    _fit(template, X[:40], y[:40])
    assert sktransfer.frozen_store_info()["rows_computed"] == 40
    X, y = X[:40].copy(), y[:40]
    if change == "row":
        X[3, 0, 2, 2] += 1e-3
        new, how = 1, "partly reused"
    elif change == "order":
        X, y = X[::-1].copy(), y[::-1].copy()
        new, how = 0, "reused"
    else:
        X, y = digit_images.X_target, digit_images.y_target
        new, how = 10, "partly reused"
    got = _fit(template, X, y)
    info = sktransfer.frozen_store_info()
    assert got.frozen_cache_["outputs"] == how
    assert info["rows_computed"] == 40 + new
    assert info["rows_reused"] == len(X) - new
    # What training saw: each row's stage output, equal to a fresh pass's to
    # float32 rounding (a row may have been computed in another batch).
    sktransfer.set_frozen_store_limit(0)
    fresh = _fit(template, X, y)
    np.testing.assert_allclose(
        got.predict_proba(X), fresh.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    assert _fit(template, X, y).frozen_cache_["outputs"] == "computed"


def test_stored_rows_are_the_stage_outputs_of_each_row(source_weights, digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    fitted = _fit(template, X[:30], y[:30])
    _fit(template, X[20:], y[20:])
    (entry,) = _store.STORE._entries.values()
    assert entry.outputs.shape[0] == len(X)  # each row once
    by_hand = _stage_outputs(fitted, X)
    digests = _digests.row_digests(X)
    stored = entry.outputs.numpy()[[entry.index[d] for d in digests]]
    np.testing.assert_allclose(stored, by_hand, rtol=1e-5, atol=1e-6)


def test_a_network_of_no_record_keeps_its_outputs_to_its_fit(digit_images):
    # A module instance's own weights belong to no record: nothing is stored.
    X, y = digit_images.X_target, digit_images.y_target
    module = ConvNet()
    for param in module.features.parameters():
        param.requires_grad_(False)
    clf = TransferClassifier(tiny_classifier_net(module, max_epochs=1), random_state=0)
    first, second = _fit(clf, X, y), _fit(clf, X, y)
    assert first.frozen_cache_["cached"]
    assert second.frozen_cache_["outputs"] == "computed"
    assert sktransfer.frozen_store_info()["entries"] == 0


def test_the_outputs_go_with_their_record(source_weights, digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    fitted = _fit(template, X, y)
    assert sktransfer.frozen_store_info()["entries"] == 1
    del template, fitted
    gc.collect()
    assert sktransfer.frozen_store_info()["entries"] == 0


def test_store_holds_at_most_its_bound_dropping_the_oldest(
    source_weights, digit_images
):
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    first = _fit(template, X, y)
    size = first.frozen_cache_["nbytes"]
    sktransfer.set_frozen_store_limit(size + size // 2)  # room for one
    assert sktransfer.frozen_store_info()["entries"] == 1
    other = _estimator(_perturbed(source_weights))  # another record
    _fit(other, X, y)  # evicts the first
    info = sktransfer.frozen_store_info()
    assert info["entries"] == 1
    assert info["nbytes"] <= info["max_bytes"]
    assert _fit(template, X, y).frozen_cache_["outputs"] == "computed"
    sktransfer.set_frozen_store_limit(size - 1)  # too small for any of them
    assert sktransfer.frozen_store_info()["entries"] == 0
    _fit(template, X, y)
    assert sktransfer.frozen_store_info()["entries"] == 0
    # Rows added to a stored stage count against the bound too.
    _fit(template, X[:30], y[:30])
    assert sktransfer.frozen_store_info()["entries"] == 1
    _fit(template, X, y)  # the rows together no longer fit
    assert sktransfer.frozen_store_info()["entries"] == 0


def test_cross_validation_runs_the_stage_once_over_each_row(
    source_weights, digit_images
):
    X, y = digit_images.X_target, digit_images.y_target
    clf = _estimator(source_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = cross_val_score(clf, X, y, cv=5)
        again = cross_val_score(clf, X, y, cv=5)
        info = sktransfer.frozen_store_info()
        # The first fold runs the stage over its training rows, the second
        # over the first fold's test rows; the other folds, and every fold
        # the second time, find all their rows stored (prediction runs the
        # fitted network as it is).
        assert (info["misses"], info["hits"]) == (2, 8)
        assert info["rows_computed"] == len(X)
        np.testing.assert_array_equal(first, again)
        search = GridSearchCV(clf, {"net__lr": [0.01, 0.02]}, cv=5).fit(X, y)
    info = sktransfer.frozen_store_info()
    # The search's 10 fits and the refit on all rows find them stored.
    assert (info["misses"], info["hits"]) == (2, 19)
    assert info["rows_computed"] == len(X)
    assert search.best_estimator_.frozen_cache_["outputs"] == "reused"


def test_key_parts_are_content_digests_of_rows_and_structure():
    a = torch.arange(12.0).reshape(3, 4)
    digests = _digests.row_digests(a.numpy())
    assert digests == _digests.row_digests(a.clone())  # tensor or array alike
    assert len(set(digests)) == 3
    assert _digests.row_digests(a.numpy()[::-1]) == digests[::-1]
    csr = sparse.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    rows = _digests.row_digests(csr)
    assert rows[0] == rows[2] != rows[1]
    layer, twin = nn.Linear(4, 2), nn.Linear(4, 2)
    structure = _digests.structure_digest
    assert structure(layer) == structure(twin)
    assert structure(layer) != structure(nn.Linear(4, 3))


class PadConvNet(ConvNet):
    """ConvNet with a pooling whose count_include_pad its extra_repr leaves out."""

    def __init__(self, n_outputs=10, count_include_pad=True):
        super().__init__(n_outputs)
        self.features[2] = nn.AvgPool2d(
            3, stride=1, padding=1, count_include_pad=count_include_pad
        )


def test_settings_missing_from_extra_repr_are_part_of_the_key(
    source_weights, digit_images
):
    # Two stages that differ only in a setting extra_repr() does not print must
    # not share outputs: the second fit and its predictions are its own.
    X, y = digit_images.X_target, digit_images.y_target
    a = _fit(_estimator(source_weights, PadConvNet), X, y)
    b = _estimator(source_weights, PadConvNet)
    b = _fit(b.set_params(net__module__count_include_pad=False), X, y)
    assert b.frozen_cache_["outputs"] == "computed"
    module = b.net_.module_.eval()
    with torch.no_grad():
        by_hand = module(torch.as_tensor(X[:64])).numpy()
    np.testing.assert_allclose(b.decision_function(X[:64]), by_hand, atol=1e-6)
    with torch.no_grad():
        other = a.net_.module_.features(torch.as_tensor(X[:8]))
        mine = module.features(torch.as_tensor(X[:8]))
    assert not torch.allclose(other, mine)  # the two stages do compute differently
    pool = {f: nn.AvgPool2d(3, 1, 1, count_include_pad=f) for f in (True, False)}
    structure = _digests.structure_digest
    assert structure(pool[True]) != structure(pool[False])
    twin = nn.AvgPool2d(3, 1, 1, count_include_pad=True)
    assert structure(pool[True]) == structure(twin)


def test_nothing_is_shared_under_a_torch_function_mode(source_weights, digit_images):
    # A function mode may change what every operation computes; no key names it.
    class Doubling(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.nn.functional.relu:
                return out * 2
            return out

    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    _fit(template, X, y)
    with Doubling():
        doubled = _fit(template, X, y)
    assert doubled.frozen_cache_["outputs"] == "computed"
    assert sktransfer.frozen_store_info()["entries"] == 1
    sktransfer.set_frozen_store_limit(0)
    with Doubling():
        alone = _fit(template, X, y)
    assert equal_weights(_weights(doubled), _weights(alone))


def test_stored_outputs_are_recomputed_when_the_stage_computes_otherwise(
    source_weights, digit_images, monkeypatch
):
    # What the stage calls at run time is in no key: a monkeypatched functional
    # changes the outputs, and the first batch, run again, shows it.
    X, y = digit_images.X_target, digit_images.y_target
    template = _estimator(source_weights)
    _fit(template, X, y)
    monkeypatch.setattr(
        torch.nn.functional,
        "relu",
        lambda x, inplace=False: torch.nn.functional.leaky_relu(x, 0.5),
    )
    patched = _fit(template, X, y)
    assert patched.frozen_cache_["outputs"] == "computed"
    sktransfer.set_frozen_store_limit(0)
    alone = _fit(template, X, y)
    assert equal_weights(_weights(patched), _weights(alone))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GB"])
def test_store_limit_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match=r"max_bytes must be a non-negative int"):
        sktransfer.set_frozen_store_limit(bad)
