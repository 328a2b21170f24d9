"""Transfer learning for PyTorch networks as first-class scikit-learn estimators.

Pretrain a network on a source task with ``fit_source``, fine-tune it on a
target task with ``fit``, and use it like any scikit-learn estimator.
"""

from . import _legacy
from ._estimators._classifier import TransferClassifier
from ._estimators._defaults import default_net
from ._estimators._features import PretrainedFeatures
from ._estimators._pipeline import fit_source
from ._estimators._regressor import TransferRegressor
from ._frozen_stage._store import (
    clear_frozen_store,
    frozen_store_info,
    set_frozen_store_limit,
)
from ._selection._compare import compare_transfer
from ._selection._comparison import NegativeTransferWarning, TransferComparison
from ._selection._plot import plot_history
from ._selection._select import linear_probe, make_transfer_search
from ._selection._unsupervised import (
    adaptation_refit,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    prediction_entropy_scorer,
)
from ._skorch._data import ArrayLoader
from ._torch._hf import HuggingFaceNet
from ._torch._modules import MLP
from ._version import __version__

_legacy.install()  # 0.1.0's module paths, for its pickles

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
    "adaptation_refit",
    "importance_weighted_scorer",
    "linear_probe",
    "make_transfer_search",
    "plot_history",
    "prediction_entropy_scorer",
    "set_frozen_store_limit",
]
