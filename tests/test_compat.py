"""Private names of scikit-learn, skorch and torch are imported in one place."""

import ast
from pathlib import Path

import pytest

import sktransfer

_LIBRARIES = {"sklearn", "skorch", "torch"}
_PACKAGE = Path(sktransfer.__file__).parent


def _private(dotted):
    """Whether a dotted name has a private part (``_x``, not ``__x__``)."""
    return any(
        part.startswith("_") and not part.endswith("__") for part in dotted.split(".")
    )


def _root(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(source):
    """``(line, text)`` of each private import or attribute of the libraries."""
    tree = ast.parse(source)
    # Names bound to the libraries' modules or objects (``from torch import nn``).
    roots = set(_LIBRARIES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in _LIBRARIES:
                roots |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            roots |= {
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] in _LIBRARIES
            }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in _LIBRARIES:
                continue
            names = [alias.name for alias in node.names]
            if _private(node.module) or any(_private(n) for n in names):
                found.append((node.lineno, f"from {node.module} import {names}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in _LIBRARIES and _private(alias.name):
                    found.append((node.lineno, f"import {alias.name}"))
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and _root(node) in roots
        ):
            found.append((node.lineno, f"{ast.unparse(node)}"))
    return found


def test_the_scan_finds_private_imports_and_attributes():
    source = (
        "from torch.nn.modules.batchnorm import _NormBase\n"
        "from skorch.utils import _make_split, to_device\n"
        "import torch.utils._python_dispatch\n"
        "x = torch._C._is_torch_function_mode_enabled\n"
        "y = torch.nn.modules.batchnorm._NormBase\n"
        "from sklearn.utils import check_array\n"
        "from ._compat import _NormBase\n"
        "z = torch.__version__\n"
        "from torch.nn.modules import module as hooks\n"
        "w = hooks._global_forward_hooks\n"
    )
    lines = sorted(line for line, _ in private_uses(source))
    assert lines == [1, 2, 3, 4, 4, 5, 10]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in _PACKAGE.rglob("*.py") if p.name != "_compat.py"),
    ids=lambda p: str(p.relative_to(_PACKAGE)),
)
def test_private_names_of_the_libraries_only_in_compat(path):
    found = private_uses(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name}: import these through _compat.py: {found}"
