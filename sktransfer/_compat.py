"""The one place where private scikit-learn, skorch and torch names are imported.

scikit-learn's own estimators use its helpers; the skorch and torch names are
base classes and registries that have no public spelling. If a release moves
one, only this module changes (``tests/test_compat.py`` keeps it the only one).
"""

import inspect

import torch
from sklearn.base import _fit_context
from sklearn.linear_model import LogisticRegressionCV
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, _get_feature_names
from skorch.utils import _make_split  # what skorch's predefined_split wraps
from torch.nn.modules import module as _torch_module  # global hook registries
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - older or newer torch

    def _get_current_dispatch_mode():
        return None


_is_torch_function_mode_enabled = getattr(
    torch._C, "_is_torch_function_mode_enabled", lambda: False
)

__all__ = [
    "L2_LOGISTIC_CV",
    "Interval",
    "StrOptions",
    "_DropoutNd",
    "_NormBase",
    "_check_sample_weight",
    "_fit_context",
    "_get_current_dispatch_mode",
    "_get_feature_names",
    "_is_torch_function_mode_enabled",
    "_make_split",
    "_safe_indexing",
    "_torch_module",
]

# LogisticRegressionCV's settings for a plain L2 penalty with the attributes of
# scikit-learn >= 1.8 (a float C_) and without its deprecation warnings; older
# releases (>= 1.6, as pyproject.toml allows) take neither setting.
L2_LOGISTIC_CV = (
    {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters
    else {}
)
