"""The one place where private scikit-learn helpers are imported.

scikit-learn's own estimators use these; if a release moves them, only this
module changes.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, _get_feature_names

__all__ = [
    "Interval",
    "StrOptions",
    "_check_sample_weight",
    "_fit_context",
    "_get_feature_names",
]
