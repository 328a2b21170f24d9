"""Documentation truth: the README's snippet runs, its lists match the suite."""

import inspect
import pydoc
import re
from pathlib import Path

import pytest
import torch
from nets import ConvNet
from skorch import NeuralNetClassifier
from test_common import expected_failed_checks

from sktransfer import MLP, TransferClassifier, TransferRegressor, default_net

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title):
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_readme_quickstart_snippet_runs_as_written(digit_images):
    (snippet,) = re.findall(r"```python\n(.*?)```", _section("Quickstart"), re.S)[:1]
    names = {  # what the text before the snippet says the reader brings
        "ConvNet": ConvNet,
        "X_source": digit_images.X_source[:200],
        "y_source": digit_images.y_source[:200],
        "X_target": digit_images.X_target,
        "y_target": digit_images.y_target,
        "X": digit_images.X_test[:100],
        "y": digit_images.y_test[:100],
    }
    exec(compile(snippet, "README.md (Quickstart)", "exec"), names)  # noqa: S102
    clf = names["clf"]
    assert clf.predict(names["X"]).shape == (100,)
    assert len(clf.source_history_) == 5  # source_params={"max_epochs": 5}
    assert len(clf.net_.history) == 20


def test_readme_expected_failures_match_the_estimator_checks():
    text = _section("scikit-learn conformance")
    listed = set(re.findall(r"`(check_\w+)`", text))
    marked = set()
    for estimator in (TransferClassifier(), TransferRegressor()):
        marked |= set(expected_failed_checks(estimator))
    assert listed == marked


@pytest.mark.parametrize("cls", [TransferClassifier, TransferRegressor])
def test_help_renders_every_parameter_on_its_own_line(cls):
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    net = f"net : NeuralNet{cls.__name__[8:]}, module class or instance, factory, "
    assert net + "or None, default=None\n" in text
    # No numpydoc line continuation left as a run of spaces inside a line, in
    # the docstrings of sktransfer (scikit-learn generates set_*_request's).
    ours = [cls] + [
        member
        for _, member in inspect.getmembers(cls, callable)
        if (getattr(member, "__module__", None) or "").startswith("sktransfer")
    ]
    for obj in ours:
        assert not re.search(r"\S {4,}default=", inspect.getdoc(obj) or ""), obj


def test_repr_of_an_estimator_with_a_template_is_readable():
    net = NeuralNetClassifier(
        MLP,
        lr=0.1,
        optimizer=torch.optim.Adam,
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        module__hidden_layer_sizes=(8,),
    )
    clf = TransferClassifier(net, frozen="features.*")
    assert repr(clf) == (
        "TransferClassifier(frozen='features.*', net=NeuralNetClassifier(MLP, "
        "criterion=CrossEntropyLoss, lr=0.1, module__hidden_layer_sizes=(8,), "
        "optimizer=Adam, train_split=None))"
    )
    assert clf.net is net  # repr changes nothing
    assert "EarlyStopping(monitor='train_loss', patience=10" in repr(
        TransferRegressor(default_net("regressor"))
    )
