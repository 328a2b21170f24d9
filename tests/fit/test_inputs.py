"""Source, target and validation data agree: encoding, columns, sample shapes."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from nets import tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.compose import make_column_transformer
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

import sktransfer
from sktransfer import (
    PretrainedFeatures,
    TransferClassifier,
    TransferRegressor,
    fit_source,
)

# ------------------------------------------- validation data through the template


def _valid_net(X_val, y_val, **kwargs):
    split = predefined_split(Dataset(X_val, y_val))
    return tiny_classifier_net(train_split=split, max_epochs=3, **kwargs)


@pytest.mark.parametrize(
    ("labels", "absent"),
    [
        pytest.param(np.arange(5, 10), None, id="labels-5-to-9"),
        pytest.param(
            np.array(["five", "six", "seven", "eight", "nine"]),
            None,
            id="string-labels",
        ),
        pytest.param(np.arange(1, 6), 5, id="labels-1-to-5-one-absent"),
    ],
)
def test_template_validation_set_is_scored_with_the_fit_encoding(
    digits, labels, absent
):
    X, y = digits.X_source, labels[digits.y_source]  # 5 classes, relabelled
    X_train, y_train, X_val, y_val = X[:300], y[:300], X[300:400], y[300:400]
    if absent is not None:
        keep = y_val != absent
        X_val, y_val = X_val[keep], y_val[keep]
    clf = TransferClassifier(_valid_net(X_val, y_val), random_state=0)
    clf.fit(X_train, y_train)
    expected = accuracy_score(y_val, clf.predict(X_val))
    assert clf.net_.history[-1, "valid_acc"] == pytest.approx(expected, abs=1e-12)


def test_unknown_validation_labels_are_a_value_error(digits):
    X, y = digits.X_source, digits.y_source + 5
    y_val = y[300:340].copy()
    y_val[0] = 42
    clf = TransferClassifier(_valid_net(X[300:340], y_val), random_state=0)
    with pytest.raises(ValueError, match=r"labels \[42\] that are not among the class"):
        clf.fit(X[:300], y[:300])
    assert not hasattr(clf, "net_")


def test_validation_samples_of_another_shape_are_a_value_error(digits):
    X, y = digits.X_source, digits.y_source
    clf = TransferClassifier(_valid_net(X[300:340, :32], y[300:340]))
    with pytest.raises(ValueError, match=r"samples of shape \(32,\), but the train"):
        clf.fit(X[:300], y[:300])


def test_regressor_validation_set_of_1d_targets_gets_the_fit_shape(digits):
    X = digits.X_source
    y = X[:, :8].sum(axis=1)  # 1-D targets
    X_val, y_val = X[300:400], y[300:400]
    net = tiny_regressor_net(train_split=predefined_split(Dataset(X_val, y_val)))
    reg = TransferRegressor(net, random_state=0).fit(X[:300], y[:300])
    # skorch averages the per-batch MSE weighted by batch size: the MSE of all,
    # in units of the training targets' variance (normalize_y=True).
    expected = mean_squared_error(y_val, reg.predict(X_val)) / y[:300].var()
    assert reg.net_.history[-1, "valid_loss"] == pytest.approx(expected, rel=1e-5)


def test_frozen_stage_cache_runs_the_validation_samples_through_the_stage(digits):
    X, y = digits.X_source, digits.y_source + 5
    X_val, y_val = X[300:400], y[300:400]
    pretrained = TransferClassifier(tiny_classifier_net(), random_state=0)
    pretrained.fit_source(X[:300], digits.y_source[:300])
    clf = clone(pretrained).set_params(
        net=_valid_net(X_val, y_val), frozen="features.*", cache_frozen=True
    )
    clf.fit(X[:300], y[:300])
    assert clf.frozen_cache_["cached"]
    expected = accuracy_score(y_val, clf.predict(X_val))
    assert clf.net_.history[-1, "valid_acc"] == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------- source and target columns agree


@pytest.fixture(scope="module")
def frame(digits):
    columns = [f"pixel{i}" for i in range(64)]
    return pd.DataFrame(digits.X_source, columns=columns)


@pytest.fixture(scope="module")
def named(frame, digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(frame, digits.y_source)


def test_swapped_columns_are_a_value_error_naming_the_fix(named, frame, digits):
    swapped = frame[["pixel1", "pixel0", *frame.columns[2:]]]
    assert list(named.source_feature_names_in_) == list(frame.columns)
    with pytest.raises(ValueError, match=r"in another order.*source_feature_names_in_"):
        clone(named).fit(swapped, digits.y_source)
    # The fix the message names gives the fit on the columns in source order.
    fixed = clone(named).fit(swapped[named.source_feature_names_in_], digits.y_source)
    reference = clone(named).fit(frame, digits.y_source)
    np.testing.assert_array_equal(
        fixed.predict_proba(frame), reference.predict_proba(frame)
    )


def test_pretrained_features_check_the_source_columns(named, frame):
    # The linear probe reads the pretrained network: its columns must be the
    # source's, in order, as for fit.
    swapped = frame[["pixel1", "pixel0", *frame.columns[2:]]]
    with pytest.raises(ValueError, match=r"in another order"):
        PretrainedFeatures(named).fit(swapped)
    with pytest.raises(ValueError, match=r"in another order"):
        sktransfer.linear_probe(named).fit(swapped, np.arange(len(frame)) % 5)
    reordered = swapped[named.source_feature_names_in_]
    np.testing.assert_array_equal(
        PretrainedFeatures(named).fit(reordered).transform(reordered),
        PretrainedFeatures(named).fit(frame).transform(frame),
    )


def test_other_columns_are_a_value_error_naming_them(named, frame, digits):
    renamed = frame.rename(columns={"pixel3": "age"})
    with pytest.raises(
        ValueError,
        match=r"unseen at fit_source: 'age'; seen at "
        r"fit_source, now missing: 'pixel3'",
    ):
        clone(named).fit(renamed, digits.y_source)


def test_unnamed_target_after_named_source_warns(named, frame, digits):
    with pytest.warns(
        UserWarning,
        match="X does not have valid feature names, but "
        "TransferClassifier was pretrained with feature names",
    ):
        clone(named).fit(frame.to_numpy(), digits.y_source)


@pytest.mark.parametrize("route", ["file", "estimator", "fitted-estimator"])
def test_loaded_sources_carry_the_column_names(named, frame, digits, route):
    source = named
    if route == "file":
        source = io.BytesIO()
        named.save_source(source)
        source.seek(0)
    elif route == "fitted-estimator":
        source = clone(named).fit(frame, digits.y_source)
    clf = TransferClassifier(tiny_classifier_net()).load_source(source)
    assert list(clf.source_feature_names_in_) == list(frame.columns)
    with pytest.raises(ValueError, match="in another order"):
        clf.fit(frame[frame.columns[::-1]], digits.y_source)


def _contact_data():
    rng = np.random.RandomState(0)
    source = pd.DataFrame({"channel": rng.choice(["fax", "store", "web"], 60)})
    target = pd.DataFrame({"channel": rng.choice(["phone", "store", "web"], 60)})
    return (
        source,
        (source["channel"] == "web").to_numpy(),
        target,
        (target["channel"] == "web").to_numpy(),
    )


def test_pipeline_keeps_the_encoder_fitted_on_the_source():
    X_s, y_s, X_t, y_t = _contact_data()
    encoder = OneHotEncoder(sparse_output=False)
    pipe = make_pipeline(encoder, TransferClassifier(tiny_classifier_net()))
    fit_source(pipe, X_s, y_s)
    # The unit that meant "fax" is never fed "phone": unknown at the target.
    with pytest.raises(ValueError, match=r"Found unknown categories \['phone'\]"):
        clone(pipe).fit(X_t, y_t)
    # Without "phone" rows, the target is encoded as the source's encoder does.
    known = (X_t["channel"] != "phone").to_numpy()
    pipe.fit(X_t[known], y_t[known])
    by_hand = OneHotEncoder(sparse_output=False).fit(X_s).transform(X_t[known])
    np.testing.assert_array_equal(pipe[:-1].transform(X_t[known]), by_hand)


def test_pipeline_encodes_unknown_target_categories_as_the_encoder_says():
    X_s, y_s, X_t, y_t = _contact_data()
    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["channel"])
    )
    pipe = make_pipeline(encoder, TransferClassifier(tiny_classifier_net()))
    fit_source(pipe, X_s, y_s)
    folds = clone(pipe)  # what cross-validation fits
    folds.fit(X_t, y_t)
    Z = folds[:-1].transform(X_t)
    by_hand = (
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        .fit(X_s)
        .transform(X_t)
    )
    np.testing.assert_array_equal(Z, by_hand)
    assert (Z[(X_t["channel"] == "phone").to_numpy()] == 0).all()  # never "fax"


# ----------------------------------------------------------------- sample shapes


class PooledNet(nn.Module):
    """A tiny CNN with global average pooling: any image size gives 4 features."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4, n_outputs)

    def forward(self, X):
        return self.head(self.features(X))


def _upsampled(images):
    return images.repeat(2, axis=2).repeat(2, axis=3)  # 8x8 -> 16x16


def test_pooled_cnn_fine_tunes_at_another_resolution_by_any_route(
    digit_images, tmp_path
):
    d = digit_images
    net = tiny_classifier_net(PooledNet)
    pretrained = TransferClassifier(net, random_state=0)
    pretrained.fit_source(d.X_source, d.y_source)
    X_big, X_test = _upsampled(d.X_target), _upsampled(d.X_test)
    direct = clone(pretrained).fit(X_big, d.y_target)
    assert direct.predict(X_test).shape == (len(X_test),)
    expected = direct.predict_proba(X_test)

    path = tmp_path / "pooled.pt"
    pretrained.save_source(path)
    module = PooledNet(5)
    module.load_state_dict(pretrained.source_weights_)
    for source in (path, dict(pretrained.source_weights_), module):
        clf = TransferClassifier(net, random_state=0).load_source(source)
        np.testing.assert_array_equal(
            clf.fit(X_big, d.y_target).predict_proba(X_test), expected
        )


def test_weights_that_do_not_fit_the_target_name_both_sample_shapes(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit_source(digits.X_source, digits.y_source)
    with pytest.raises(
        ValueError,
        match=r"target samples have shape \(32,\) but the weights were pretrained "
        r"on samples of shape \(64,\).*'features.1.weight' has shape \(16, 32\)",
    ):
        clf.fit(digits.X_target[:, :32], digits.y_target)


# ----------------------------------------------------------------- smaller slips


def test_fit_given_a_dataset_says_it_takes_arrays(digits):
    dataset = Dataset(digits.X_target, digits.y_target)
    with pytest.raises(TypeError, match=r"fit takes arrays X and y; got a Dataset"):
        TransferClassifier(tiny_classifier_net()).fit(dataset, None)


def test_net_prefixed_source_params_say_to_drop_the_prefix(digits):
    clf = TransferClassifier(
        tiny_classifier_net(), source_params={"net__max_epochs": 2}
    )
    with pytest.raises(
        ValueError,
        match=r"Invalid source_params .*drop the prefix: \{'max_epochs': 2\}",
    ):
        clf.fit_source(digits.X_source, digits.y_source)
    assert not hasattr(clf, "_pretrained")


def test_fit_source_after_fit_leaves_no_fitted_state(digits):
    frame = pd.DataFrame(digits.X_target, columns=[f"c{i}" for i in range(64)])
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit(frame, digits.y_target.astype(float))
    fitted = {
        "net_",
        "n_outputs_",
        "n_features_in_",
        "feature_names_in_",
        "frozen_cache_",
        "_sample_shape",
        "_y_ndim",
    }
    assert fitted <= set(vars(reg))
    reg.fit_source(digits.X_source, digits.y_source.astype(float))
    assert not fitted & set(vars(reg))
    with pytest.raises(NotFittedError):
        reg.predict(digits.X_test)
    assert torch.is_tensor(reg.source_weights_["features.1.weight"])


def test_a_weight_file_without_column_names_still_loads(named, frame, digits):
    buffer = io.BytesIO()
    named.save_source(buffer)
    buffer.seek(0)
    payload = torch.load(buffer, weights_only=True)
    del payload["feature_names"]  # as files written before the names were kept
    older = io.BytesIO()
    torch.save(payload, older)
    older.seek(0)
    clf = TransferClassifier(tiny_classifier_net()).load_source(older)
    assert clf.source_feature_names_in_ is None
    # Nothing says which column each input unit stands for: no check.
    clf.fit(frame[frame.columns[::-1]], digits.y_source)
