"""Documentation truth: every snippet of the pages runs, the pages match the code."""

import contextlib
import importlib.util
import inspect
import io
import pydoc
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from skorch import NeuralNetClassifier

import sktransfer
import sktransfer.datasets
from sktransfer import MLP, TransferClassifier, TransferRegressor, default_net

ROOT = Path(__file__).resolve().parents[1]


def _test_common():
    """tests/estimators/test_common.py, loaded by its path (not on sys.path)."""
    path = ROOT / "tests" / "estimators" / "test_common.py"
    spec = importlib.util.spec_from_file_location("_sktransfer_test_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


expected_failed_checks = _test_common().expected_failed_checks
DOC = ROOT / "doc"
README = (ROOT / "README.md").read_text()
GENERATED = {"_build", "auto_examples", "generated", "_generated"}
PAGES = sorted(
    path
    for path in DOC.rglob("*.rst")
    if not GENERATED & set(path.relative_to(DOC).parts)
)

# A directive and its indented body; the body ends at the first line that is
# neither blank nor indented.
_DIRECTIVE = re.compile(r"^\.\. (testsetup|testcode|testoutput|code-block)::(.*)\n")


def directives(text):
    """Yield ``(name, argument, body, line before)`` for each directive of a page."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line + "\n")
        if not match:
            continue
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and not following.startswith(" "):
                break
            body.append(following)
        options_done = [b for b in body if not b.strip().startswith(":")]
        code = textwrap.dedent("\n".join(options_done)).strip("\n")
        before = next((x for x in reversed(lines[:i]) if x.strip()), "")
        yield match[1], match[2].strip(), code, before


def _pages_with_snippets():
    # The quickstart runs in test_quickstart_does_what_it_says, with its checks.
    return [
        p
        for p in PAGES
        if ".. testcode::" in p.read_text() and p.name != "quickstart.rst"
    ]


def run_page(path):
    """Run a page's snippets in order in one module, as a reader's script would."""
    # A real module, so that classes the snippets define pickle (clone, joblib).
    module = types.ModuleType(f"_sktransfer_doc_{path.stem}")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    printed = ""
    for name, _, code, _ in directives(path.read_text()):
        if name in ("testsetup", "testcode"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, str(path), "exec"), namespace)  # noqa: S102
            printed = out.getvalue()
        elif name == "testoutput":
            assert printed.split() == code.split(), (path.name, printed, code)
    return namespace


@pytest.fixture
def in_doc(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(DOC))  # the pages' testsetup imports _snippet_data
    monkeypatch.chdir(tmp_path)  # files the snippets write land here
    threads = torch.get_num_threads()  # the pages' setup sets one thread
    yield
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.FitFailedWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "page", _pages_with_snippets(), ids=lambda p: str(p.relative_to(DOC))
)
def test_every_snippet_of_the_page_runs(page, in_doc):
    run_page(page)


def test_python_blocks_that_do_not_run_say_why():
    for page in PAGES:
        for name, language, _, before in directives(page.read_text()):
            if name == "code-block" and language in ("python", "pycon"):
                assert before.startswith(".. not executed: "), (page.name, before)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_quickstart_does_what_it_says(in_doc):
    names = run_page(DOC / "quickstart.rst")
    clf = names["clf"]
    assert clf.predict(names["X"]).shape == (100,)
    assert len(clf.source_history_) == 5  # source_params={"max_epochs": 5}
    assert len(clf.net_.history) == 20
    assert len(names["search"].cv_results_["params"]) == 4


def _testcode(path):
    return next(
        code for n, _, code, _ in directives(path.read_text()) if n == "testcode"
    )


def test_readme_quickstart_is_the_quickstart_page_s():
    (snippet,) = re.findall(r"```python\n(.*?)```", README, re.S)[:1]
    assert snippet.strip() == _testcode(DOC / "quickstart.rst").strip()


def test_readme_is_a_landing_page_with_the_commands_ci_reads():
    assert len(README.splitlines()) <= 150
    for block in ("quickstart-command", "test-command", "docs-command"):
        assert re.search(rf"<!-- {block} -->\n```bash\n.+\n```", README), block
    docs = re.search(r"<!-- docs-command -->\n```bash\n(.+)\n```", README)[1]
    assert '".[doc]"' in docs
    assert "-W --keep-going" in docs


def test_conformance_page_lists_the_suite_s_expected_failures():
    spec = importlib.util.spec_from_file_location(
        "_sktransfer_doc_conf", DOC / "conf.py"
    )
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # writes the list
    generated = (DOC / "_generated" / "expected_failures.inc").read_text()
    listed = set(re.findall(r"``(check_\w+)``", generated))
    marked = set()
    for estimator in (TransferClassifier(), TransferRegressor()):
        marked |= set(expected_failed_checks(estimator))
    assert listed == marked
    page = (DOC / "conformance.rst").read_text()
    assert ".. include:: _generated/expected_failures.inc" in page
    assert not re.findall(r"check_\w+", page)  # no hand-written copy to drift


def test_every_public_name_is_in_the_api_reference():
    api = (DOC / "api.rst").read_text()
    documented = set()
    for block in re.findall(r"\.\. autosummary::\n((?:   .*\n|\n)+)", api):
        documented |= {
            line.strip()
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith(":")
        }
    public = set(sktransfer.__all__) - {"__version__"}
    datasets = {"make_digits_transfer", "fetch_mnist"}
    assert public | datasets == documented
    assert "``sktransfer.__version__``" in api


def test_every_example_is_linked_from_the_page_it_illustrates():
    text = "\n".join(p.read_text() for p in PAGES)
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert f"sphx_glr_auto_examples_{example.stem}.py" in text, example.name


def test_examples_set_no_thread_count_but_one():
    for example in sorted((ROOT / "examples").glob("*.py")):
        counts = re.findall(r"set_num_threads\((\w+)\)", example.read_text())
        assert set(counts) <= {"1"}, (example.name, counts)


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


def test_the_pages_name_no_missing_file():
    for page in PAGES:
        for name in re.findall(
            r"``((?:examples|benchmarks|doc|tests)/[\w/.]+\.py)``", page.read_text()
        ):
            assert (ROOT / name).exists(), (page.name, name)


def test_every_public_docstring_links_to_the_user_guide():
    names = [n for n in sktransfer.__all__ if n != "__version__"]
    objects = [getattr(sktransfer, n) for n in names]
    objects += [
        sktransfer.datasets.make_digits_transfer,
        sktransfer.datasets.fetch_mnist,
    ]
    for obj in objects:
        doc = obj.__doc__ or ""
        assert re.search(r"Read more in the :(ref|doc):`User Guide <[^>]+>`", doc), obj
        assert "${" not in doc, obj  # every shared block was filled in
