"""TransferClassifier: pretraining, fine-tuning, frozen layers, heads and errors."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from nets import ConvNet, FixedOutputNet, tiny_classifier_net
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from sktransfer import MLP, TransferClassifier


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained classifier (clone it before fitting)."""
    clf = TransferClassifier(tiny_classifier_net(), frozen="features.*", random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


def test_fit_source_returns_self_and_is_not_fitted(digits):
    clf = TransferClassifier(tiny_classifier_net(), random_state=0)
    assert clf.fit_source(digits.X_source, digits.y_source) is clf
    np.testing.assert_array_equal(clf.source_classes_, [0, 1, 2, 3, 4])
    assert len(clf.source_history_) == 3
    with pytest.raises(NotFittedError):
        clf.predict(digits.X_test)


def test_frozen_parameters_are_bit_identical_and_the_rest_moved(pretrained, digits):
    clf = clone(pretrained).fit(digits.X_target, digits.y_target)
    source = pretrained.source_weights_
    state = clf.net_.module_.state_dict()
    for name in ("features.1.weight", "features.1.bias"):
        assert torch.equal(state[name], source[name])
        # Frozen for fit only: the fitted module has the flags it arrived with.
        assert clf.net_.module_.get_parameter(name).requires_grad
    assert state["head.weight"].shape == (5, 16)  # target has 5 classes
    assert source["head.weight"].shape == (5, 16)

    full = clone(pretrained).set_params(frozen=())
    full.fit(digits.X_target, digits.y_target)
    moved = full.net_.module_.state_dict()["features.1.weight"]
    assert not torch.equal(moved, source["features.1.weight"])


def test_fit_never_changes_the_pretrained_weights(pretrained, digits):
    clf = clone(pretrained).set_params(frozen=())
    before = {k: v.clone() for k, v in clf.source_weights_.items()}
    clf.fit(digits.X_target, digits.y_target)
    for key, value in clf.source_weights_.items():
        assert torch.equal(value, before[key])


def test_head_is_rebuilt_for_another_number_and_kind_of_classes(pretrained, digits):
    mask = np.isin(digits.y_target, [5, 6, 7])
    labels = np.array(["five", "six", "seven"])[digits.y_target[mask] - 5]
    clf = clone(pretrained).fit(digits.X_target[mask], labels)
    np.testing.assert_array_equal(clf.classes_, ["five", "seven", "six"])
    assert clf.net_.module_.head.out_features == 3
    # The probabilities by hand: softmax of the new head over the hidden layer.
    state = {k: v.double() for k, v in clf.net_.module_.state_dict().items()}
    X = torch.as_tensor(digits.X_test, dtype=torch.float64)
    hidden = torch.relu(X @ state["features.1.weight"].T + state["features.1.bias"])
    logits = hidden @ state["head.weight"].T + state["head.bias"]
    expected = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(digits.X_test), expected, atol=1e-5)
    predicted = clf.predict(digits.X_test)
    np.testing.assert_array_equal(predicted, clf.classes_[expected.argmax(axis=1)])
    assert set(predicted) == {"five", "six", "seven"}
    # Labels map to the head's outputs in sorted order: the same fit as on codes.
    codes = np.searchsorted(clf.classes_, labels)
    by_code = clone(pretrained).fit(digits.X_target[mask], codes)
    torch.testing.assert_close(
        by_code.net_.module_.state_dict(), clf.net_.module_.state_dict()
    )
    assert clf.score(digits.X_target[mask], labels) > 0.5  # chance: 1/3


def test_string_and_non_contiguous_labels_round_trip(digits):
    y = np.where(digits.y_target == 5, "cat", "dog")
    clf = TransferClassifier(tiny_classifier_net(max_epochs=20), random_state=0)
    clf.fit(digits.X_target, y)
    assert set(clf.predict(digits.X_target)) == {"cat", "dog"}
    assert clf.score(digits.X_target, y) > 0.8

    y = digits.y_target * 10 - 3  # 47, 57, ..., 87
    clf.fit(digits.X_target, y)
    np.testing.assert_array_equal(clf.classes_, [47, 57, 67, 77, 87])
    assert set(clf.predict(digits.X_test)) <= set(clf.classes_)


def test_transfer_beats_a_frozen_random_backbone_only_after_pretraining(digits):
    """The pretrained weights really arrive: a frozen backbone carries them."""
    net = tiny_classifier_net(max_epochs=1)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    scratch = clf.fit(digits.X_target, digits.y_target).net_.module_
    clf.fit_source(digits.X_source, digits.y_source)
    transferred = clf.fit(digits.X_target, digits.y_target).net_.module_
    source = clf.source_weights_["features.1.weight"]
    assert torch.equal(transferred.features[1].weight, source)
    assert not torch.equal(scratch.features[1].weight, source)


def test_head_none_transfers_every_weight(digits):
    mask = digits.y_source < 5
    clf = TransferClassifier(
        tiny_classifier_net(), head=None, frozen=("features.*", "head.weight")
    )
    clf.fit_source(digits.X_source[mask], digits.y_source[mask])
    clf.fit(digits.X_target, digits.y_target)  # 5 classes too
    assert torch.equal(clf.net_.module_.head.weight, clf.source_weights_["head.weight"])


def test_head_none_warns_when_shared_labels_change_outputs(digits):
    # The kept head maps outputs by sorted position: source ["neg", "pos"]
    # onto target ["pos", "zzz"] turns the "pos" output into "zzz", silently.
    X, y = digits.X_source[:60], digits.y_source[:60] % 2
    source = np.array(["neg", "pos"])[y]
    clf = TransferClassifier(tiny_classifier_net(), head=None, max_epochs=1)
    clf.fit_source(X, source)
    with pytest.warns(UserWarning, match="head=None keeps the pretrained head") as w:
        clf.fit(X, np.array(["pos", "zzz"])[y])
    said = [r for r in w if "head=None" in str(r.message)]
    assert len(said) == 1
    assert said[0].filename == __file__
    assert "the output that predicted 'pos' now predicts 'zzz'" in str(said[0].message)
    for labels in (["neg", "pos"], ["a", "b"]):  # same places, or none shared
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            clf.fit(X, np.array(labels)[y])


def test_head_none_with_other_output_sizes_is_an_error(digits):
    clf = TransferClassifier(tiny_classifier_net(), head=None, random_state=0)
    clf.fit_source(digits.X_source, digits.y_source)
    mask = digits.y_target < 8
    with pytest.raises(ValueError, match="source task has 5 outputs and the target"):
        clf.fit(digits.X_target[mask], digits.y_target[mask])


def test_module_without_size_parameters_gets_its_head_resized(digits):
    clf = TransferClassifier(
        tiny_classifier_net(FixedOutputNet), head="out", frozen="body.*"
    )
    clf.fit_source(digits.X_source, digits.y_source)
    assert clf.source_weights_["out.weight"].shape == (5, 16)
    mask = digits.y_target < 8
    clf.fit(digits.X_target[mask], digits.y_target[mask])
    assert clf.net_.module_.out.out_features == 3
    assert clf.predict_proba(digits.X_test).shape[1] == 3


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # 200 epochs on 50 samples: still improving
def test_module_instance_is_the_pretrained_network(digits):
    module = MLP(n_features_in=64, n_outputs=10, hidden_layer_sizes=(16,))
    weights = module.features[1].weight.detach().clone()
    clf = TransferClassifier(module, frozen="features.*", random_state=0)
    clf.fit(digits.X_target, digits.y_target)
    assert torch.equal(clf.net_.module_.features[1].weight, weights)
    assert clf.net_.module_.head.out_features == 5
    assert clf.net_.module_ is not module  # the template's module is never touched
    assert module.head.out_features == 10


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # 200 epochs on 50 samples: still improving
def test_net_given_as_module_class_gets_sensible_defaults(digit_images):
    d = digit_images
    clf = TransferClassifier(ConvNet, random_state=0).fit(d.X_target, d.y_target)
    assert isinstance(clf.net_.criterion_, nn.CrossEntropyLoss)
    assert clf.net_.module_.head[2].out_features == 5
    assert clf.score(d.X_target, d.y_target) > 0.9


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # 200 epochs on 50 samples: still improving
def test_default_net_fits_tabular_data_like_mlpclassifier(digits):
    clf = TransferClassifier(random_state=0).fit(digits.X_target, digits.y_target)
    assert clf.n_features_in_ == 64
    assert clf.score(digits.X_test, digits.y_test) > 0.8


def test_frozen_batchnorm_keeps_the_pretrained_statistics(digit_images):
    d = digit_images
    net = tiny_classifier_net(ConvNet)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    clf.fit_source(d.X_source, d.y_source)
    clf.fit(d.X_target, d.y_target)
    stats = clf.net_.module_.features[1].running_mean
    assert torch.equal(stats, clf.source_weights_["features.1.running_mean"])

    clf.set_params(freeze_bn_stats=False).fit(d.X_target, d.y_target)
    stats = clf.net_.module_.features[1].running_mean
    assert not torch.equal(stats, clf.source_weights_["features.1.running_mean"])


def test_image_input_and_sample_shape_checks(digit_images):
    d = digit_images
    clf = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    clf.fit_source(d.X_source, d.y_source).fit(d.X_target, d.y_target)
    assert clf.n_features_in_ == 1
    # The labels by hand: argmax of the module's outputs in evaluation mode.
    module = copy.deepcopy(clf.net_.module_).eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(d.X_test))
    expected = clf.classes_[logits.argmax(dim=1).numpy()]
    np.testing.assert_array_equal(clf.predict(d.X_test), expected)
    with pytest.raises(ValueError, match=r"X has samples of shape \(1, 4, 16\)"):
        clf.predict(d.X_test.reshape(-1, 1, 4, 16))
    # The network does not run on 16x16 images: its head takes 8x8 ones.
    big = d.X_target.repeat(2, axis=2).repeat(2, axis=3)
    with pytest.raises(
        ValueError,
        match=r"shape \(1, 16, 16\) but the weights were pretrained on samples "
        r"of shape \(1, 8, 8\)",
    ):
        clf.fit(big, d.y_target)


def test_same_random_state_gives_identical_predictions(digits):
    def fit(seed):
        clf = TransferClassifier(tiny_classifier_net(), random_state=seed)
        clf.fit_source(digits.X_source, digits.y_source)
        return clf.fit(digits.X_target, digits.y_target).predict_proba(digits.X_test)

    np.testing.assert_array_equal(fit(3), fit(3))
    assert not np.array_equal(fit(3), fit(4))


def test_random_state_leaves_the_global_torch_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    TransferClassifier(tiny_classifier_net(), random_state=0).fit(
        digits.X_target, digits.y_target
    )
    assert torch.equal(torch.rand(1), expected)


def test_verbose_labels_pretraining_and_fine_tuning(digits, capsys):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=2), verbose=1)
    clf.fit_source(digits.X_source, digits.y_source)
    clf.fit(digits.X_target, digits.y_target)
    out = capsys.readouterr().out
    assert "Pretraining on the source task: 901 samples, 5 classes" in out
    assert "Fine-tuning on the target task: 50 samples, 5 classes" in out
    assert out.count("epoch    train_loss") == 2  # one epoch table for each phase
    for phase in ("Pretraining", "Fine-tuning"):  # one summary line each
        assert out.count(f"{phase} done: 2 epochs, max_epochs=2 reached") == 1

    TransferClassifier(tiny_classifier_net(verbose=1)).fit(
        digits.X_target, digits.y_target
    )
    assert capsys.readouterr().out == ""  # verbose=0 silences the template


def test_source_params_apply_to_pretraining_only(digits):
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=2), source_params={"max_epochs": 4}
    )
    clf.fit_source(digits.X_source, digits.y_source)
    clf.fit(digits.X_target, digits.y_target)
    assert len(clf.source_history_) == 4
    assert len(clf.net_.history) == 2


# ------------------------------------------------------------------- errors


def test_frozen_pattern_that_matches_nothing_lists_the_names(digits):
    clf = TransferClassifier(tiny_classifier_net(), frozen="feature.*")
    with pytest.raises(ValueError, match=r"frozen pattern 'feature.\*' matches no"):
        clf.fit(digits.X_target, digits.y_target)
    with pytest.raises(ValueError, match="'features.1.weight'"):
        clf.fit_source(digits.X_source, digits.y_source)  # checked before training
    assert not hasattr(clf, "_pretrained")


def test_freezing_everything_is_an_error(digits):
    clf = TransferClassifier(tiny_classifier_net(), frozen="*")
    with pytest.raises(ValueError, match="leaves no trainable parameter in MLP"):
        clf.fit(digits.X_target, digits.y_target)

    module = MLP(n_features_in=64, n_outputs=5, hidden_layer_sizes=(8,))
    module.head.requires_grad_(False)  # frozen by hand in the instance
    clf = TransferClassifier(module, head=None, frozen="features.*")
    with pytest.raises(ValueError, match="leaves no trainable parameter"):
        clf.fit(digits.X_target, digits.y_target)


def test_failed_fit_leaves_the_estimator_as_it_was(pretrained, digits):
    clf = clone(pretrained).fit(digits.X_target, digits.y_target)
    net, classes = clf.net_, clf.classes_
    with pytest.raises(ValueError, match=r"pretrained on samples of shape \(64,\)"):
        clf.fit(digits.X_source[:, :32], digits.y_source)
    assert clf.net_ is net
    assert clf.classes_ is classes
    assert clf.n_features_in_ == 64


def test_unknown_head_is_an_error(digits):
    clf = TransferClassifier(tiny_classifier_net(), head="heads")
    with pytest.raises(ValueError, match=r"head='heads' is not a submodule.*'head'"):
        clf.fit(digits.X_target, digits.y_target)


@pytest.mark.parametrize(
    ("net", "error", "match"),
    [
        ("mlp", TypeError, "net must be None, a skorch NeuralNetClassifier"),
        (NeuralNetRegressor(MLP), TypeError, "needs net to be a skorch Neural"),
        (nn.Linear(64, 5), ValueError, "head='auto' found no nn.Linear"),
    ],
)
def test_bad_net_is_a_clear_error(digits, net, error, match):
    with pytest.raises(error, match=match):
        TransferClassifier(net).fit(digits.X_target, digits.y_target)


def test_initialized_skorch_net_is_refused(digits):
    net = tiny_classifier_net(module__n_features_in=64, module__n_outputs=5)
    net.initialize()
    with pytest.raises(ValueError, match=r"pass the trained module instead"):
        TransferClassifier(net).fit(digits.X_target, digits.y_target)


def test_module_that_cannot_take_the_data_is_explained(digits):
    clf = TransferClassifier(tiny_classifier_net(FixedOutputNet))
    with pytest.raises(
        ValueError, match=r"failed on a batch of \d+ training samples of shape \(32,\)"
    ):
        clf.fit(digits.X_target[:, :32], digits.y_target)


def test_bad_source_params_name_the_setting(digits):
    clf = TransferClassifier(tiny_classifier_net(), source_params={"max_epoch": 2})
    with pytest.raises(ValueError, match="Invalid source_params.*max_epoch"):
        clf.fit_source(digits.X_source, digits.y_source)


def test_nested_net_parameters_need_a_skorch_net():
    with pytest.raises(ValueError, match="Cannot set net__lr: net is None"):
        TransferClassifier().set_params(net__lr=0.1)
    clf = TransferClassifier(tiny_classifier_net()).set_params(net__lr=0.5)
    assert clf.net.lr == 0.5


@pytest.mark.parametrize(
    ("X", "y", "error", "match"),
    [
        (np.ones((4, 3)), [0.5, 1.5, 2.5, 3.5], ValueError, "Unknown label type"),
        (np.ones((4, 3)), [1, 1, 1, 1], ValueError, "at least 2 classes"),
        ([[np.nan, 1]] * 4, [0, 1, 0, 1], ValueError, "NaN"),
        ([[np.inf, 1]] * 4, [0, 1, 0, 1], ValueError, "infinity"),
        (np.ones((0, 3)), [], ValueError, "0 sample"),
        (np.full((4, 2), 1 + 1j), [0, 1, 0, 1], ValueError, "Complex data"),
        ([["a", "b"]] * 4, [0, 1, 0, 1], ValueError, "could not convert"),
        (np.ones(4), [0, 1, 0, 1], ValueError, "Expected 2D array, got 1D"),
        (np.ones((4, 3)), [0, 1], ValueError, "inconsistent numbers of samples"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(X, y, error, match):
    clf = TransferClassifier(tiny_classifier_net())
    for method in (clf.fit, clf.fit_source):
        with pytest.raises(error, match=match):
            method(X, y)
        assert vars(clf) == vars(TransferClassifier(clf.net))


class OutputDefinedFirst(nn.Module):
    """The output layer is defined before the hidden one, so 'auto' picks wrong."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, 10)
        self.hidden = nn.Linear(64, 16)

    def forward(self, X):
        return self.out(torch.relu(self.hidden(X)))


def test_a_wrongly_guessed_head_is_explained(digits):
    clf = TransferClassifier(tiny_classifier_net(OutputDefinedFirst))
    with pytest.raises(ValueError, match=r"head='auto' resolved to \['hidden'\]"):
        clf.fit(digits.X_target, digits.y_target)
    clf.set_params(head="out").fit(digits.X_target, digits.y_target)
    assert clf.net_.module_.out.out_features == 5


def test_freezing_the_fresh_head_warns(digits):
    clf = TransferClassifier(tiny_classifier_net(), frozen=("features.*", "head.bias"))
    with pytest.warns(
        UserWarning, match=r"freezes parameters of the head \(head.bias\)"
    ):
        clf.fit(digits.X_target, digits.y_target)


def test_skorch_net_holding_a_trained_instance_starts_from_it(digits):
    module = MLP(n_features_in=64, n_outputs=10, hidden_layer_sizes=(16,))
    weights = module.features[1].weight.detach().clone()
    net = NeuralNetClassifier(
        module, criterion=nn.CrossEntropyLoss, max_epochs=2, train_split=None
    )
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    clf.fit(digits.X_target, digits.y_target)
    assert torch.equal(clf.net_.module_.features[1].weight, weights)
    assert clf.net_.module_.head.out_features == 5


def test_dataframe_feature_names_are_remembered(digits):
    columns = [f"pixel{i}" for i in range(64)]
    X = pd.DataFrame(digits.X_target, columns=columns)
    clf = TransferClassifier(tiny_classifier_net(), random_state=0).fit(
        X, pd.Series(digits.y_target)
    )
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(X[columns[::-1]])


def test_early_stopping_names_the_class_too_rare_to_split_by_its_label():
    X = np.random.default_rng(0).normal(size=(21, 4)).astype(np.float32)
    y = np.array(["cat"] * 10 + ["dog"] * 10 + ["emu"])
    clf = TransferClassifier(early_stopping=True, max_epochs=1, random_state=0)
    with pytest.raises(ValueError, match="class 'emu' has 1"):
        clf.fit(X, y)
