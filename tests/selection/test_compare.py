"""compare_transfer: same splits, settings, the negative-transfer test, the result."""

import re
import sys
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from nets import tiny_classifier_net, tiny_regressor_net
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sktransfer import (
    NegativeTransferWarning,
    TransferClassifier,
    TransferComparison,
    TransferRegressor,
    compare_transfer,
    fit_source,
)
from sktransfer._selection._comparison import _paired_worse
from sktransfer.datasets import make_digits_transfer

matplotlib.use("Agg")

SETTINGS = {"frozen backbone": {"frozen": "features.*"}, "L2-SP": {"l2sp": 0.01}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained classifier (compare_transfer only clones it)."""
    clf = TransferClassifier(tiny_classifier_net(), random_state=7)
    return clf.fit_source(digits.X_source, digits.y_source)


@pytest.fixture(scope="module")
def comparison(pretrained, digits):
    with warnings.catch_warnings():
        # Whether tiny networks transfer from 0-4 to 5-9 is not what this checks.
        warnings.simplefilter("ignore", NegativeTransferWarning)
        return compare_transfer(
            pretrained,
            digits.X_target,
            digits.y_target,
            cv=3,
            settings=SETTINGS,
            linear_probe=False,
            random_state=0,
        )


@pytest.fixture
def fit_calls(monkeypatch):
    """Record every fine-tuning fit: its settings and its training samples."""
    calls = []
    original = TransferClassifier.fit

    def spy(self, X, y):
        calls.append(
            {
                "X": X.copy(),
                "weights": self._has_source_weights(),
                "frozen": self.frozen,
                "l2sp": self.l2sp,
                "random_state": self.random_state,
            }
        )
        return original(self, X, y)

    monkeypatch.setattr(TransferClassifier, "fit", spy)
    return calls


def forbid_pretraining(monkeypatch, cls):
    """Make fit_source of ``cls`` fail; return the list of its calls."""
    calls = []

    def spy(self, X, y):
        calls.append(type(self).__name__)
        raise AssertionError("fit_source must not be called")

    monkeypatch.setattr(cls, "fit_source", spy)
    return calls


# ------------------------------------------------------------- the verdicts


def test_negative_transfer_from_a_useless_source_is_detected_and_warned():
    # The source labels are shuffled: the frozen features learn nothing useful
    # about digits, and a head on them does far worse than a network trained
    # from scratch. (Checked with seeds 0 to 4: scratch 0.93 to 0.95, transfer
    # 0.31 to 0.46 mean accuracy, p < 1e-4 every time.)
    data = make_digits_transfer(40, random_state=0)
    noise = np.random.RandomState(0).permutation(data.y_source)
    net = tiny_classifier_net(max_epochs=10, lr=0.03, batch_size=80)
    source_params = {"max_epochs": 2, "batch_size": 128}
    clf = TransferClassifier(
        net, frozen="features.*", source_params=source_params, random_state=0
    ).fit_source(data.X_source, noise)
    pattern = (
        r"Negative transfer: every transferred setting scores lower than training "
        r"from scratch over 5 folds .*'transfer' 0\.\d{3} \(p=.*\), against "
        r"0\.\d{3} for 'scratch'"
    )
    with pytest.warns(NegativeTransferWarning, match=pattern):
        result = compare_transfer(
            clf, data.X_target, data.y_target, cv=5, random_state=0
        )
    assert result.negative_transfer
    assert result.p_values["transfer"] < 0.01
    assert result.gain < -0.2
    assert (result.scores["transfer"] < result.scores["scratch"]).all()
    assert "Verdict: Transfer hurt on these data: every transferred" in str(result)


def test_a_useful_source_gives_a_positive_gain_and_no_warning():
    # The source task is the target task on other samples (digits 5-9): with
    # 10 labelled samples per fold, fine-tuning from its weights beats training
    # from scratch. (Checked with seeds 0 to 4: gain 0.06 to 0.13 accuracy.)
    data = make_digits_transfer(10, random_state=0)
    X_source, y_source = data.X_test[:500], data.y_test[:500]
    X, y = data.X_test[500:], data.y_test[500:]
    net = tiny_classifier_net(max_epochs=20, lr=0.03)
    source_params = {"max_epochs": 10, "batch_size": 128}
    clf = TransferClassifier(net, source_params=source_params, random_state=0)
    clf.fit_source(X_source, y_source)
    cv = StratifiedShuffleSplit(5, train_size=10, test_size=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NegativeTransferWarning)
        result = compare_transfer(
            clf,
            X,
            y,
            cv=cv,
            settings={"frozen backbone": {"frozen": "features.*"}},
            random_state=0,
        )
    assert not result.negative_transfer
    assert result.gain > 0.05
    assert result.n_splits == 5
    assert result.best in ("transfer", "frozen backbone")
    assert all(p > 0.5 for p in result.p_values.values())
    assert (
        str(result)
        .splitlines()[-1]
        .startswith(
            f"Verdict: Transfer beat scratch on these data: best transfer setting "
            f"{result.best!r}"
        )
    )


# ------------------------------------------------- splits, settings, seeds


@pytest.mark.parametrize(
    ("random_state", "expected_cv", "expected_seed"),
    [
        (None, StratifiedKFold(3), 7),
        (0, StratifiedKFold(3, shuffle=True, random_state=0), 0),
    ],
)
def test_every_setting_is_fitted_on_the_same_splits_without_pretraining(
    pretrained,
    digits,
    fit_calls,
    monkeypatch,
    random_state,
    expected_cv,
    expected_seed,
):
    pretraining = forbid_pretraining(monkeypatch, TransferClassifier)
    X, y = digits.X_target, digits.y_target
    result = compare_transfer(
        pretrained,
        X,
        y,
        cv=3,
        settings=SETTINGS,
        linear_probe=False,
        random_state=random_state,
    )
    assert pretraining == []
    assert list(result.scores) == ["scratch", "transfer", "frozen backbone", "L2-SP"]
    assert all(scores.shape == (3,) for scores in result.scores.values())
    assert len(fit_calls) == 4 * 3
    expected = [X[train] for train, _ in expected_cv.split(X, y)]
    for i, call in enumerate(fit_calls):
        np.testing.assert_array_equal(call["X"], expected[i % 3])
        assert call["random_state"] == expected_seed
    scratch, transfer, frozen, l2sp = (fit_calls[i : i + 3] for i in (0, 3, 6, 9))
    assert not any(call["weights"] for call in scratch)
    assert all(call["weights"] for call in transfer + frozen + l2sp)
    assert {call["frozen"] for call in frozen} == {"features.*"}
    assert {call["l2sp"] for call in l2sp} == {0.01}
    assert {call["frozen"] for call in transfer + l2sp} == {()}


def test_an_explicit_splitter_and_scoring_are_used(pretrained, digits, fit_calls):
    X, y = digits.X_target, digits.y_target
    cv = StratifiedKFold(2, shuffle=True, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NegativeTransferWarning)
        result = compare_transfer(
            pretrained, X, y, cv=cv, scoring="balanced_accuracy", random_state=0
        )
    expected = [X[train] for train, _ in cv.split(X, y)] * 2
    assert len(fit_calls) == len(expected)
    for call, X_train in zip(fit_calls, expected, strict=True):
        np.testing.assert_array_equal(call["X"], X_train)
    assert result.scoring == "balanced_accuracy"
    assert result.n_splits == 2


def test_a_regressor_is_compared_on_shuffled_kfold_splits_with_r2(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 64)).astype(np.float32)
    y = X[:, :3].sum(axis=1)
    reg = TransferRegressor(tiny_regressor_net(), random_state=0)
    reg.fit_source(X, -y)
    pretraining = forbid_pretraining(monkeypatch, TransferRegressor)
    seen = []
    original = TransferRegressor.fit

    def spy(self, X, y):
        seen.append(X.copy())
        return original(self, X, y)

    monkeypatch.setattr(TransferRegressor, "fit", spy)
    result = compare_transfer(reg, X, y, cv=3, linear_probe=False, random_state=0)
    assert pretraining == []
    assert result.scoring == "r2"
    assert list(result.scores) == ["scratch", "transfer"]
    expected = [
        X[train] for train, _ in KFold(3, shuffle=True, random_state=0).split(X)
    ]
    for X_seen, X_train in zip(seen, expected * 2, strict=True):
        np.testing.assert_array_equal(X_seen, X_train)


def test_a_pipeline_ending_in_a_transfer_estimator(digits):
    pipe = make_pipeline(
        FunctionTransformer(), TransferClassifier(tiny_classifier_net())
    )
    fit_source(pipe, digits.X_source, digits.y_source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NegativeTransferWarning)
        result = compare_transfer(
            pipe,
            digits.X_target,
            digits.y_target,
            cv=2,
            settings={"frozen": {"transferclassifier__frozen": "features.*"}},
            random_state=0,
        )
    assert list(result.scores) == ["scratch", "transfer", "linear probe", "frozen"]
    assert pipe[-1].random_state is None  # the estimator passed is not changed


# ------------------------------------------------------------------ errors


def test_an_estimator_without_pretrained_weights_is_rejected(digits):
    clf = TransferClassifier(tiny_classifier_net())
    with pytest.raises(ValueError, match=r"no pretrained weights: call fit_source"):
        compare_transfer(clf, digits.X_target, digits.y_target)


def test_an_estimator_that_is_not_a_transfer_estimator_is_rejected(digits):
    with pytest.raises(TypeError, match=r"got LogisticRegression"):
        compare_transfer(LogisticRegression(), digits.X_target, digits.y_target)


@pytest.mark.parametrize(
    ("settings", "error", "pattern"),
    [
        ([("a", {})], TypeError, r"settings must be a dict .* got list"),
        ({1: {}}, TypeError, r"Setting names must be strings; got 1 of type int"),
        ({"a": "frozen"}, TypeError, r"setting 'a' must be a dict .* got str"),
        ({"scratch": {}}, ValueError, r"'scratch' is reserved"),
        ({" Transfer": {}}, ValueError, r"' Transfer' is reserved"),
        ({"  ": {}}, ValueError, r"must not be empty"),
        ({"L2-SP": {}, "l2-sp ": {}}, ValueError, r"'L2-SP' and 'l2-sp ' are dup"),
        (
            {"typo": {"frozn": "features.*"}},
            ValueError,
            r"Invalid parameters \{'frozn': 'features.\*'\} in the setting 'typo'"
            r".*Invalid parameter 'frozn'",
        ),
        (
            {"negative": {"l2sp": -1.0}},
            ValueError,
            r"in the setting 'negative'.*'l2sp' parameter",
        ),
    ],
)
def test_invalid_settings_fail_before_any_training(
    pretrained, digits, fit_calls, settings, error, pattern
):
    with pytest.raises(error, match=pattern):
        compare_transfer(
            pretrained, digits.X_target, digits.y_target, settings=settings
        )
    assert fit_calls == []


def test_more_than_one_score_is_rejected(pretrained, digits, fit_calls):
    with pytest.raises(TypeError, match=r"compares one score: .* got list"):
        compare_transfer(
            pretrained, digits.X_target, digits.y_target, scoring=["accuracy", "f1"]
        )
    assert fit_calls == []


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="the note naming the setting uses BaseException.add_note, new in 3.11",
)
def test_an_error_in_a_fold_names_the_setting(pretrained, digits):
    with pytest.raises(
        ValueError, match=r"pattern 'nothing.\*' matches no parameter"
    ) as info:
        compare_transfer(
            pretrained,
            digits.X_target,
            digits.y_target,
            cv=2,
            settings={"bad pattern": {"frozen": "nothing.*"}},
        )
    assert "setting 'bad pattern'" in " ".join(info.value.__notes__)


# ----------------------------------------------------------- the test used


def test_paired_worse_is_scipys_one_sided_paired_t_test():
    rng = np.random.RandomState(0)
    reference = rng.uniform(0.7, 0.9, size=5)
    scores = reference - rng.uniform(0.0, 0.1, size=5)
    p_value, worse = _paired_worse(scores, reference)
    expected = stats.ttest_rel(scores, reference, alternative="less").pvalue
    assert p_value == pytest.approx(expected)
    assert worse == (expected < 0.05)


@pytest.mark.parametrize(
    ("shift", "expected"),
    [(-0.1, (0.0, True)), (0.0, (1.0, False)), (0.1, (1.0, False))],
)
def test_paired_worse_without_spread_compares_the_difference(shift, expected):
    reference = np.array([0.8, 0.7, 0.9])
    # 0.8 - 0.1 - 0.8 is not exactly -0.1: the spread is rounding error only.
    assert _paired_worse(reference + shift, reference) == expected


def test_paired_worse_cannot_decide_on_one_fold():
    p_value, worse = _paired_worse(np.array([0.1]), np.array([0.9]))
    assert np.isnan(p_value)
    assert not worse


def test_negative_transfer_needs_every_setting_to_be_worse():
    scratch = [0.80, 0.82, 0.84, 0.86, 0.88]
    scores = {
        "scratch": scratch,
        "transfer": [0.60, 0.61, 0.65, 0.64, 0.70],
        "better": [0.81, 0.84, 0.85, 0.88, 0.90],
    }
    result = TransferComparison(scores, scoring="accuracy")
    assert not result.negative_transfer
    assert result.p_values["transfer"] < 0.05
    assert result.best == "better"
    assert result.gain == pytest.approx(np.mean(scores["better"]) - np.mean(scratch))
    del scores["better"]
    assert TransferComparison(scores).negative_transfer


def test_a_comparison_needs_one_score_per_fold_for_every_setting():
    with pytest.raises(ValueError, match=r"one score per fold; got shapes"):
        TransferComparison({"scratch": [0.5, 0.6], "transfer": [0.5]})
    with pytest.raises(ValueError, match=r"at least one transferred setting"):
        TransferComparison({"scratch": [0.5, 0.6]})


# ------------------------------------------------------------- the result


def test_repr_is_a_table_of_every_setting_with_a_verdict(comparison):
    text = repr(comparison)
    assert str(comparison) == text
    lines = text.splitlines()
    assert lines[0] == (
        "TransferComparison(3-fold cross-validation, scoring='accuracy')"
    )
    assert lines[1].split() == [
        "setting",
        "accuracy",
        "mean",
        "±",
        "std",
        "vs",
        "scratch",
        "p",
        "(lower)",
    ]
    for line, name in zip(lines[2:6], comparison.scores, strict=True):
        assert line.startswith(name)
        scores = comparison.scores[name]
        assert f"{scores.mean():.3f} ± {scores.std():.3f}" in line
    assert lines[6].startswith("Verdict: ")
    assert len(lines) == 7


def test_the_verdict_when_no_setting_beats_scratch_but_not_all_are_worse():
    result = TransferComparison(
        {"scratch": [0.8, 0.9, 0.7], "transfer": [0.75, 0.95, 0.6]}, scoring="f1"
    )
    # Differences -0.05, 0.05, -0.1: t = -0.756 with 2 degrees of freedom.
    diff = np.array([-0.05, 0.05, -0.1])
    p_lower = stats.t.cdf(diff.mean() / (diff.std(ddof=1) / 3**0.5), 2)
    assert f"{p_lower:.2g}" == "0.26"
    assert result.verdict == (
        "Transfer did not beat scratch on these data: best transfer setting "
        "'transfer', f1 0.767 vs 0.800 for scratch, p = 0.26 that it is lower "
        "(over 3 folds, one-sided paired t-test); train from scratch, or try "
        "another source task or other settings."
    )


@pytest.mark.parametrize(
    ("transfer", "start", "p_text"),
    [
        # Differences 0.1, 0.05, 0.1, 0.05: mean 0.075, sd 0.0289, t = 5.2, 3 dof.
        (
            [0.9, 0.95, 0.8, 0.85],
            "Transfer beat scratch",
            "p = 0.0069 that it is higher",
        ),
        # Differences 0.1, -0.05, 0.05, 0.05: not significant either way.
        ([0.9, 0.85, 0.75, 0.85], "Transfer did not clearly beat", "p = 0.16 that"),
        ([0.6, 0.7, 0.5, 0.65], "Transfer hurt on these data", "p < 0.001 that"),
    ],
)
def test_each_verdict_is_one_sentence_with_scores_and_p_value(transfer, start, p_text):
    scratch = [0.8, 0.9, 0.7, 0.8]
    result = TransferComparison({"scratch": scratch, "transfer": transfer})
    verdict = result.verdict
    assert verdict.startswith(start)
    assert p_text in verdict
    assert f"{np.mean(transfer):.3f} vs 0.800 for scratch" in verdict
    assert verdict.count(". ") == 0  # one sentence
    assert verdict.endswith(".")


def test_verbose_reports_each_setting_and_fold(capsys):
    data = make_digits_transfer(10, random_state=0)
    clf = TransferClassifier(tiny_classifier_net(max_epochs=2), random_state=0)
    clf.fit_source(data.X_source[:200], data.y_source[:200])
    compare_transfer(clf, data.X_target, data.y_target, cv=2, verbose=1)
    out = capsys.readouterr().out
    assert "[sktransfer] compare_transfer: setting 1/3 'scratch', 2 folds" in out
    assert "[sktransfer] compare_transfer: setting 2/3 'transfer', 2 folds" in out
    assert "[sktransfer] compare_transfer: setting 3/3 'linear probe', 2 folds" in out
    assert out.count("[CV] END") == 6  # scikit-learn's line for each fold
    assert re.search(r"'transfer' done: accuracy 0\.\d{3} ± 0\.\d{3} over 2 folds", out)


def test_to_frame_has_one_row_per_fold_and_one_column_per_setting(comparison):
    frame = comparison.to_frame()
    assert frame.shape == (3, 4)
    assert list(frame.columns) == list(comparison.scores)
    assert frame.index.name == "fold"
    assert frame.columns.name == "setting"
    np.testing.assert_array_equal(frame["L2-SP"], comparison.scores["L2-SP"])
    tidy = frame.melt(ignore_index=False, value_name="score")
    assert tidy.shape == (12, 2)


def test_to_frame_without_pandas_says_how_to_install_it(comparison, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"requires pandas: pip install pandas"):
        comparison.to_frame()


def test_plot_draws_one_scatter_per_setting(comparison):
    ax = comparison.plot()
    names = list(comparison.scores)
    assert len(ax.collections) == len(names)
    for collection, name in zip(ax.collections, names, strict=True):
        assert collection.get_label() == name
        np.testing.assert_allclose(
            collection.get_offsets()[:, 1], comparison.scores[name]
        )
    assert [label.get_text() for label in ax.get_xticklabels()] == names
    assert ax.get_ylabel() == "accuracy"
    # The reference line sits at the mean score of scratch.
    (reference,) = [
        line for line in ax.get_lines() if line.get_label() == "scratch mean"
    ]
    assert reference.get_ydata()[0] == pytest.approx(
        comparison.scores["scratch"].mean()
    )
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["scratch mean"]


def test_plot_spreads_and_counts_tied_fold_scores_and_shows_p_values():
    result = TransferComparison(
        {
            "scratch": [0.8, 0.9, 0.8, 0.7],
            "transfer": [0.9, 0.9, 0.9, 0.8],
            "frozen": [0.6, 0.7, 0.5, 0.65],
        }
    )
    ax = result.plot()
    scratch, transfer, frozen = (c.get_offsets() for c in ax.collections)
    # Three folds tie at 0.9 under transfer: three x positions, one count.
    tied = transfer[transfer[:, 1] == 0.9, 0]
    assert len(set(tied)) == 3
    assert all(abs(x - 1) <= 0.12 + 1e-9 for x in tied)
    assert transfer[transfer[:, 1] == 0.8, 0].tolist() == [1.0]
    assert len(set(scratch[scratch[:, 1] == 0.8, 0])) == 2
    assert frozen[:, 0].tolist() == [2.0] * 4  # no ties, no spread
    texts = [text.get_text() for text in ax.texts]
    assert texts.count("×3") == 1
    assert texts.count("×2") == 1
    for name in ("transfer", "frozen"):
        assert f"p = {result.p_values[name]:.2g}" in texts
    # Each fold's grey line goes through its jittered points.
    folds = [line for line in ax.get_lines() if line.get_color() == "grey"]
    np.testing.assert_allclose([f.get_xdata()[1] for f in folds], transfer[:, 0])


def test_plot_draws_on_the_axes_given(comparison):
    _, ax = plt.subplots()
    assert comparison.plot(ax=ax) is ax


def test_plot_without_matplotlib_says_how_to_install_it(comparison, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[plot\]' from a clone"):
        comparison.plot()
