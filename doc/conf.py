"""Sphinx configuration of sktransfer's documentation.

Build it from the repository root with ``python -m sphinx -W --keep-going -b html
doc doc/_build/html`` (the README's docs command). The build is offline:
intersphinx is on only when ``SKTRANSFER_DOCS_INTERSPHINX=1`` is set, and the
gallery runs only the examples that need no download and no optional package.
"""

import importlib.util
import os
import sys
import warnings
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots of the gallery are drawn without a display

DOC = Path(__file__).resolve().parent
ROOT = DOC.parent
sys.path.insert(0, str(ROOT))

import sktransfer  # noqa: E402

project = "sktransfer"
author = "sktransfer developers"
copyright = f"{date.today().year}, {author}"  # noqa: A001 (Sphinx's name)
release = version = sktransfer.__version__
if version == "0.0.0" and sys.version_info >= (3, 11):  # a tree that is not installed
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as file:
        release = version = tomllib.load(file)["project"]["version"]

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
]
if os.environ.get("SKTRANSFER_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.inc", "auto_examples/*.ipynb"]
templates_path = ["_templates"]
default_role = "literal"  # `x` is code, as in Markdown
nitpicky = False

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # numpydoc's Parameters section already gives the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every public name's docstring is validated; a failure is a warning, which -W
# turns into an error. Left out: extended summaries, examples and See Also on
# every method (scikit-learn's own docstrings do not have them either) and the
# name-based checks numpydoc gets wrong for properties.
numpydoc_validation_checks = {
    "GL02",  # the docstring opens on the line of its quotes or the next
    "GL03",  # no double blank lines
    "GL05",  # tabs
    "GL06",  # unknown section
    "GL07",  # sections in the wrong order
    "GL10",  # backticks
    "SS01",  # a summary
    "SS02",  # the summary starts with a capital letter
    "SS03",  # the summary ends with a period
    "SS05",  # the summary is in the infinitive
    "PR01",  # every parameter documented
    "PR02",  # no unknown parameter documented
    "PR03",  # parameters in the signature's order
    "PR04",  # each parameter has a type
    "PR07",  # each parameter has a description
    "PR05",  # a parameter's type does not end with a period
    "PR06",  # types use "int", "bool", "str"
    "PR10",  # a space before the colon
    "RT01",  # a Returns section where the function returns
    "RT03",  # each return value has a description
    "YD01",  # a generator documents what it yields
}
# Methods that scikit-learn generates or inherits are its docstrings, not ours.
numpydoc_validation_exclude = {
    r"\.set_\w+_request$",
    r"\.get_metadata_routing$",
    r"\.get_params$",
    r"\.set_params$",
    r"\.set_output$",
    r"\.fit_transform$",
    r"\.__init__$",
    r"\.__call__$",
    r"^sktransfer\.MLP\.\w+$",  # torch.nn.Module's methods
}

# -- Gallery -----------------------------------------------------------------
# Executed during the build: the examples that run offline on the CPU in seconds.
# Shown but not executed: the MNIST example downloads its data, the Dask
# example needs the optional dask extra and starts a cluster, and the text
# example needs the optional text packages and the encoder's weights.
EXECUTED = ("quickstart", "compare_methods", "diabetes", "augmented_finetuning")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(" + "|".join(EXECUTED) + r")\.py$",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 1,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "doc_module": ("sktransfer",),
    "backreferences_dir": "generated/backreferences",
    "show_memory": False,
    "show_signature": False,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {version}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
    "navbar_end": ["navbar-icon-links"],
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": [], "install": [], "quickstart": []}
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

myst_heading_anchors = 3

# pydata-sphinx-theme and sphinx-gallery talk about their own future versions.
warnings.filterwarnings("ignore", category=DeprecationWarning)


# -- Pages generated from the code ----------------------------------------------
def _expected_failures():
    """Write the conformance page's list from ``tests/estimators/test_common.py``."""
    spec = importlib.util.spec_from_file_location(
        "_sktransfer_test_common", ROOT / "tests" / "estimators" / "test_common.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = []
    for estimator in (sktransfer.TransferClassifier(), sktransfer.TransferRegressor()):
        name = type(estimator).__name__
        for check, reason in module.expected_failed_checks(estimator).items():
            lines += [f"* - ``{name}``", f"  - ``{check}``", f"  - {reason}"]
    table = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 15 30 55",
        "",
        "   * - estimator",
        "     - check",
        "     - why it is expected to fail",
        *("   " + line for line in lines),
    ]
    out = DOC / "_generated" / "expected_failures.inc"
    out.parent.mkdir(exist_ok=True)
    text = "\n".join(table) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


_expected_failures()


def _skip_generated_members(app, what, name, obj, skip, options):
    """Leave out what sktransfer does not define: scikit-learn's and torch's members.

    The API pages list inherited members, so that ``fit`` and ``fit_source``
    (defined in sktransfer's private base classes) appear on each estimator's
    page; the members that come from scikit-learn (``get_params``, the
    generated ``set_*_request``) or torch (``nn.Module``'s methods) are theirs
    to document.
    """
    if what != "class":
        return None
    function = getattr(obj, "fget", obj)  # a property's getter
    module = getattr(function, "__module__", None) or ""
    if not module.startswith("sktransfer"):
        return True
    return None


def setup(app):
    """Register the hook that leaves out scikit-learn's generated methods."""
    app.connect("autodoc-skip-member", _skip_generated_members)
