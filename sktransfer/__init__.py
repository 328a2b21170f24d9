"""Transfer learning for PyTorch networks as first-class scikit-learn estimators.

Pretrain a network on a source task with ``fit_source``, fine-tune it on a
target task with ``fit``, and use it like any scikit-learn estimator.
"""

from importlib.metadata import PackageNotFoundError, version

from ._classifier import TransferClassifier
from ._compare import NegativeTransferWarning, TransferComparison, compare_transfer
from ._data import ArrayLoader
from ._defaults import default_net
from ._features import PretrainedFeatures
from ._hf import HuggingFaceNet
from ._modules import MLP
from ._pipeline import fit_source
from ._plot import plot_history
from ._regressor import TransferRegressor
from ._select import linear_probe, make_transfer_search
from ._store import clear_frozen_store, frozen_store_info, set_frozen_store_limit
from ._unsupervised import (
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    prediction_entropy_scorer,
)

try:
    __version__ = version("sktransfer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "MLP",
    "ArrayLoader",
    "HuggingFaceNet",
    "NegativeTransferWarning",
    "PretrainedFeatures",
    "TransferClassifier",
    "TransferComparison",
    "TransferRegressor",
    "__version__",
    "clear_frozen_store",
    "compare_transfer",
    "deep_embedded_validation_scorer",
    "default_net",
    "fit_source",
    "frozen_store_info",
    "importance_weighted_scorer",
    "linear_probe",
    "make_transfer_search",
    "plot_history",
    "prediction_entropy_scorer",
    "set_frozen_store_limit",
]
