"""The one place where private scikit-learn helpers are imported.

scikit-learn's own estimators use these; if a release moves them, only this
module changes.
"""

import inspect

from sklearn.base import _fit_context
from sklearn.linear_model import LogisticRegressionCV
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, _get_feature_names

__all__ = [
    "L2_LOGISTIC_CV",
    "Interval",
    "StrOptions",
    "_check_sample_weight",
    "_fit_context",
    "_get_feature_names",
    "_safe_indexing",
]

# LogisticRegressionCV's settings for a plain L2 penalty with the attributes of
# scikit-learn >= 1.8 (a float C_) and without its deprecation warnings; older
# releases (>= 1.6, as pyproject.toml allows) take neither setting.
L2_LOGISTIC_CV = (
    {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters
    else {}
)
