"""save_source / load_source: safe weight files and weights from elsewhere."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from nets import ConvNet, equal_weights, tiny_classifier_net, tiny_regressor_net
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import sktransfer
from sktransfer import TransferClassifier, TransferRegressor


@pytest.fixture(scope="module")
def pretrained(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


@pytest.fixture(scope="module")
def conv_pretrained(digit_images):
    clf = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    return clf.fit_source(digit_images.X_source, digit_images.y_source)


def test_round_trip_is_bit_identical_and_fine_tunes_the_same(
    pretrained, digits, tmp_path
):
    path = tmp_path / "source.pt"
    pretrained.save_source(path)
    loaded = TransferClassifier(tiny_classifier_net(), random_state=0)
    assert loaded.load_source(path) is loaded

    assert equal_weights(loaded.source_weights_, pretrained.source_weights_)
    np.testing.assert_array_equal(loaded.source_classes_, pretrained.source_classes_)
    assert loaded.source_classes_.dtype == pretrained.source_classes_.dtype
    assert loaded.source_history_ == pretrained.source_history_

    ours = clone(pretrained).fit(digits.X_target, digits.y_target)
    theirs = loaded.fit(digits.X_target, digits.y_target)
    np.testing.assert_array_equal(
        ours.predict_proba(digits.X_test), theirs.predict_proba(digits.X_test)
    )


def test_file_objects_and_string_classes_round_trip(digits):
    labels = np.array(["zero", "one", "two", "three", "four"])[digits.y_source]
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    clf.fit_source(digits.X_source, labels)
    buffer = io.BytesIO()
    clf.save_source(buffer)
    buffer.seek(0)
    loaded = TransferClassifier(tiny_classifier_net()).load_source(buffer)
    np.testing.assert_array_equal(loaded.source_classes_, clf.source_classes_)
    assert equal_weights(loaded.source_weights_, clf.source_weights_)


def test_regressor_round_trip(digits, tmp_path):
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit_source(digits.X_source, digits.y_source.astype(float))
    reg.save_source(tmp_path / "reg.pt")
    loaded = TransferRegressor(tiny_regressor_net()).load_source(tmp_path / "reg.pt")
    assert equal_weights(loaded.source_weights_, reg.source_weights_)


class _Payload:
    """Writes a marker file when unpickled: what a malicious weight file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    pretrained, tmp_path, writer
):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    evil = {"format": "sktransfer.source", "state_dict": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(evil))
    else:
        torch.save(evil, path)
    clf = clone(pretrained)
    before = clf.source_weights_
    with pytest.raises(ValueError, match="not a weight file written by save_source"):
        clf.load_source(path)
    assert not marker.exists()
    assert clf.source_weights_ is before  # nothing changed


def test_other_files_are_refused_with_a_hint(pretrained, tmp_path):
    state = tmp_path / "state.pt"
    torch.save(dict(pretrained.source_weights_), state)
    with pytest.raises(ValueError, match="no 'sktransfer.source' record"):
        TransferClassifier(tiny_classifier_net()).load_source(state)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a weight file")
    with pytest.raises(ValueError, match="torch.load refused it"):
        TransferClassifier(tiny_classifier_net()).load_source(junk)
    with pytest.raises(FileNotFoundError):
        TransferClassifier(tiny_classifier_net()).load_source(tmp_path / "missing")


def test_a_file_from_a_newer_format_is_refused(pretrained, tmp_path):
    path = tmp_path / "source.pt"
    pretrained.save_source(path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="format version 99 is newer"):
        TransferClassifier(tiny_classifier_net()).load_source(path)


def test_a_file_whose_shapes_disagree_with_its_weights_is_refused(pretrained, tmp_path):
    path = tmp_path / "source.pt"
    pretrained.save_source(path)
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["shapes"]))
    payload["shapes"][key] = [1]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"recorded shapes disagree for \\['{key}'\\]"):
        TransferClassifier(tiny_classifier_net()).load_source(path)


def test_mismatched_shapes_name_each_parameter(conv_pretrained):
    state = dict(conv_pretrained.source_weights_)
    state["features.0.weight"] = torch.zeros(8, 1, 3, 3)
    del state["features.1.running_mean"]
    state["head.2.weight"] = torch.zeros(3, 16)  # the head may differ
    state["head.2.bias"] = torch.zeros(3)
    clf = TransferClassifier(tiny_classifier_net(ConvNet))
    with pytest.raises(ValueError, match="do not fit the network") as info:
        clf.load_source(state)
    message = str(info.value)
    assert "'features.0.weight' has shape (4, 1, 3, 3) in the network but " in message
    assert "(8, 1, 3, 3) in the source weights" in message
    assert "'features.1.running_mean' is missing" in message
    assert "head" not in message.split(". Shared")[0]
    assert not hasattr(clf, "_pretrained")


def test_prefixed_names_get_a_hint(conv_pretrained):
    prefixed = {f"module.{k}": v for k, v in conv_pretrained.source_weights_.items()}
    clf = TransferClassifier(tiny_classifier_net(ConvNet))
    with pytest.raises(ValueError, match="carry the prefix 'module.'.*removeprefix"):
        clf.load_source(prefixed)
    stripped = {k.removeprefix("module."): v for k, v in prefixed.items()}
    assert equal_weights(clf.load_source(stripped).source_weights_, stripped)


def test_a_different_head_is_accepted(conv_pretrained, digit_images):
    state = dict(conv_pretrained.source_weights_)
    state["head.2.weight"] = torch.zeros(3, 16)
    state["head.2.bias"] = torch.zeros(3)
    clf = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    clf.load_source(state).fit(digit_images.X_target, digit_images.y_target)
    assert clf.predict_proba(digit_images.X_test).shape == (len(digit_images.X_test), 5)
    # The head is rebuilt whatever it held: the same fit as from the source's
    # own head, and the body starts from the loaded weights.
    same = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    same.load_source(conv_pretrained.source_weights_)
    same.fit(digit_images.X_target, digit_images.y_target)
    assert equal_weights(clf.net_.module_.state_dict(), same.net_.module_.state_dict())
    scratch = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    scratch.fit(digit_images.X_target, digit_images.y_target)
    assert not equal_weights(
        clf.net_.module_.state_dict(), scratch.net_.module_.state_dict()
    )


def test_head_none_takes_every_weight_including_the_output_layer(
    conv_pretrained, digit_images
):
    state = dict(conv_pretrained.source_weights_)  # 5 source classes
    clf = TransferClassifier(tiny_classifier_net(ConvNet), head=None, random_state=0)
    clf.load_source(state).fit(digit_images.X_target, digit_images.y_target)
    fitted = clf.net_.module_.state_dict()
    assert fitted["head.2.weight"].shape == state["head.2.weight"].shape
    three = {
        **state,
        "head.2.weight": torch.zeros(3, 16),
        "head.2.bias": torch.zeros(3),
    }
    with pytest.raises(ValueError, match="'head.2.weight' has shape \\(5, 16\\)"):
        clone(clf).load_source(three).fit(digit_images.X_target, digit_images.y_target)


def test_a_module_trained_by_hand_is_a_source(conv_pretrained, digit_images):
    module = ConvNet(n_outputs=7)
    module.load_state_dict(
        {k: v for k, v in conv_pretrained.source_weights_.items() if "head.2" not in k},
        strict=False,
    )
    clf = TransferClassifier(tiny_classifier_net(ConvNet), frozen="features.*")
    clf.load_source(module)
    with torch.no_grad():
        module.features[0].weight.add_(1.0)  # later changes do not reach the copy
    assert torch.equal(
        clf.source_weights_["features.0.weight"],
        conv_pretrained.source_weights_["features.0.weight"],
    )
    clf.fit(digit_images.X_target, digit_images.y_target)
    fitted = clf.net_.module_.state_dict()
    assert torch.equal(
        fitted["features.0.weight"],
        conv_pretrained.source_weights_["features.0.weight"],
    )


def test_estimators_and_skorch_nets_are_sources(pretrained, digits):
    shared = TransferClassifier(tiny_classifier_net()).load_source(pretrained)
    assert shared.source_weights_ is pretrained.source_weights_

    fitted = clone(pretrained).fit(digits.X_target, digits.y_target)
    sequential = TransferClassifier(tiny_classifier_net()).load_source(fitted)
    assert equal_weights(
        sequential.source_weights_,
        fitted.net_.module_.state_dict(),
    )
    np.testing.assert_array_equal(sequential.source_classes_, [5, 6, 7, 8, 9])

    from_net = TransferClassifier(tiny_classifier_net()).load_source(fitted.net_)
    assert equal_weights(from_net.source_weights_, sequential.source_weights_)

    with pytest.raises(ValueError, match="neither pretrained nor fitted"):
        TransferClassifier().load_source(TransferClassifier())
    with pytest.raises(ValueError, match="not initialized"):
        TransferClassifier().load_source(tiny_classifier_net())


def test_loaded_weights_survive_clone_pickle_and_joblib(pretrained, tmp_path):
    clf = TransferClassifier(tiny_classifier_net()).load_source(
        dict(pretrained.source_weights_)
    )
    joblib.dump(clf, tmp_path / "clf.joblib")
    for copy in (
        clone(clf),
        pickle.loads(pickle.dumps(clf)),
        joblib.load(tmp_path / "clf.joblib"),
    ):
        assert equal_weights(copy.source_weights_, pretrained.source_weights_)


def test_pretrained_false_keeps_loaded_weights_but_does_not_start_from_them(
    pretrained,
):
    scratch = clone(pretrained).set_params(pretrained=False)
    assert not scratch._has_source_weights()
    scratch.load_source(pretrained)
    assert not scratch._has_source_weights()
    assert equal_weights(scratch.source_weights_, pretrained.source_weights_)
    assert scratch.set_params(pretrained=True)._has_source_weights()


def test_bad_sources_and_saving_without_weights():
    clf = TransferClassifier(tiny_classifier_net())
    with pytest.raises(TypeError, match="got int"):
        clf.load_source(3)
    with pytest.raises(TypeError, match="'a': str"):
        clf.load_source({"a": "not a tensor"})
    with pytest.raises(ValueError, match="empty"):
        clf.load_source({})
    with pytest.raises(NotFittedError, match="no pretrained weights to save"):
        clf.save_source(io.BytesIO())
    assert not hasattr(clf, "_pretrained")


def test_a_module_instance_as_net_can_be_saved(tmp_path):
    module = ConvNet()
    clf = TransferClassifier(tiny_classifier_net(module))
    clf.save_source(tmp_path / "module.pt")
    loaded = TransferClassifier(tiny_classifier_net(ConvNet))
    loaded.load_source(tmp_path / "module.pt")
    assert equal_weights(loaded.source_weights_, module.state_dict())


def test_a_failed_save_leaves_an_existing_file_intact(
    pretrained, tmp_path, monkeypatch
):
    path = tmp_path / "source.pt"
    pretrained.save_source(path)
    before = path.read_bytes()

    def disk_full(obj, stream):
        stream.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(sktransfer._pretrained._io.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pretrained.save_source(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["source.pt"]


def test_the_file_records_names_shapes_and_version(pretrained, tmp_path):
    pretrained.save_source(tmp_path / "source.pt")
    payload = torch.load(tmp_path / "source.pt", weights_only=True)
    assert payload["sktransfer_version"] == sktransfer.__version__
    assert payload["estimator"] == "TransferClassifier"
    assert payload["shapes"] == {
        k: list(v.shape) for k, v in pretrained.source_weights_.items()
    }
