"""plot_history: both training phases on one set of axes; matplotlib optional."""

import ast
import inspect
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from nets import tiny_classifier_net
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch.dataset import ValidSplit

import sktransfer._selection._candidates
import sktransfer._selection._plot
from sktransfer import TransferClassifier, plot_history

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pretrained(digits):
    """A read-only pretrained classifier (clone it before fitting)."""
    clf = TransferClassifier(tiny_classifier_net(max_epochs=2), random_state=0)
    clf.set_params(source_params={"max_epochs": 4})
    return clf.fit_source(digits.X_source, digits.y_source)


@pytest.fixture(scope="module")
def fitted(pretrained, digits):
    return clone(pretrained).fit(digits.X_target, digits.y_target)


def labelled_lines(ax):
    return {
        line.get_label(): line
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }


def test_both_phases_are_drawn_with_epochs_numbered_on(fitted):
    ax = plot_history(fitted)
    lines = labelled_lines(ax)
    assert list(lines) == ["pretraining: train loss", "fine-tuning: train loss"]
    source, target = lines.values()
    np.testing.assert_array_equal(source.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(target.get_xdata(), [5, 6])
    np.testing.assert_allclose(
        source.get_ydata(), [row["train_loss"] for row in fitted.source_history_]
    )
    np.testing.assert_allclose(target.get_ydata(), fitted.net_.history[:, "train_loss"])
    assert source.get_color() != target.get_color()
    # The divider between the phases, and their names above it.
    (divider,) = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    np.testing.assert_array_equal(divider.get_xdata(), [4.5, 4.5])
    assert [text.get_text().strip() for text in ax.texts] == [
        "pretraining",
        "fine-tuning",
    ]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == list(lines)
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "loss"


def test_a_network_trained_from_scratch_has_one_phase(pretrained, digits):
    scratch = sktransfer._selection._candidates.from_scratch(pretrained).fit(
        digits.X_target, digits.y_target
    )
    ax = plot_history(scratch)
    assert list(labelled_lines(ax)) == ["training: train loss"]
    assert len(ax.get_lines()) == 1  # no divider
    assert len(ax.texts) == 0
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2])


def test_a_pretrained_estimator_not_yet_fitted_has_the_pretraining_phase(pretrained):
    ax = plot_history(pretrained)
    assert list(labelled_lines(ax)) == ["pretraining: train loss"]


def test_validation_losses_are_drawn_when_the_net_holds_out_data(digits):
    net = tiny_classifier_net(max_epochs=2, train_split=ValidSplit(5))
    clf = TransferClassifier(net, random_state=0)
    clf.fit_source(digits.X_source, digits.y_source)
    clf.fit(digits.X_target, digits.y_target)
    lines = labelled_lines(plot_history(clf))
    assert list(lines) == [
        "pretraining: train loss",
        "pretraining: valid loss",
        "fine-tuning: train loss",
        "fine-tuning: valid loss",
    ]
    assert lines["fine-tuning: valid loss"].get_linestyle() == "--"
    np.testing.assert_allclose(
        lines["fine-tuning: valid loss"].get_ydata(), clf.net_.history[:, "valid_loss"]
    )


def test_a_single_epoch_is_drawn_as_a_marker(digits):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=1), random_state=0)
    ax = plot_history(clf.fit(digits.X_target, digits.y_target))
    assert ax.get_lines()[0].get_marker() == "o"


def test_a_pipeline_is_plotted_through_its_transfer_estimator(pretrained, digits):
    pipe = make_pipeline(FunctionTransformer(), clone(pretrained))
    pipe.fit(digits.X_target, digits.y_target)
    assert len(labelled_lines(plot_history(pipe))) == 2


def test_plot_history_draws_on_the_axes_given(fitted):
    _, ax = plt.subplots()
    assert plot_history(fitted, ax=ax) is ax


def test_an_estimator_with_no_history_is_not_fitted():
    clf = TransferClassifier(tiny_classifier_net())
    with pytest.raises(NotFittedError, match=r"neither been pretrained nor fitted"):
        plot_history(clf)


def test_plot_history_needs_a_transfer_estimator():
    with pytest.raises(TypeError, match=r"got LogisticRegression"):
        plot_history(LogisticRegression())


def test_plot_history_without_matplotlib_says_how_to_install_it(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(
        ImportError,
        match=(
            r"plot_history requires matplotlib: pip install '\.\[plot\]' from a "
            r"clone of sktransfer \(or pip install matplotlib\)"
        ),
    ):
        plot_history(fitted)


def import_time_imports(node):
    """The modules an AST imports when it runs: not in functions or TYPE_CHECKING."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return []
    if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
        return [name for child in node.orelse for name in import_time_imports(child)]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [
        name
        for child in ast.iter_child_nodes(node)
        for name in import_time_imports(child)
    ]


def test_import_time_imports_finds_a_module_level_import():
    code = "import os\nif TYPE_CHECKING:\n    import a\ndef f():\n    import b\n"
    assert import_time_imports(ast.parse(code)) == ["os"]


@pytest.mark.parametrize(
    "module", [sktransfer._selection._compare, sktransfer._selection._plot]
)
def test_matplotlib_is_not_imported_when_the_modules_are(module):
    names = import_time_imports(ast.parse(inspect.getsource(module)))
    assert "numpy" in names
    assert not [name for name in names if name.startswith("matplotlib")]
