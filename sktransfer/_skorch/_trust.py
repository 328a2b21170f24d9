"""What the frozen-stage cache must trust about a skorch net besides its module.

While the cache is used, the net trains on the frozen stage's outputs: skorch
makes its dataset and batches from them, and ``module_`` is the trainable rest
only. That gives the same weights as uncached fine-tuning only when nothing
between the array and the module looks at the samples (a dataset that flips
images, a ``collate_fn`` that adds noise, a net class whose ``get_dataset`` or
``train_step_single`` transforms them would get feature vectors instead), and
when no callback reads or writes the whole module's parameters. Each is
checked here by name: the data path against skorch's own classes and
settings, the callbacks against an explicit list.
"""

from __future__ import annotations

from functools import partial

from skorch import callbacks as skorch_callbacks
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import DataLoader

from .._compat import _make_split  # what predefined_split wraps
from ._data import _IGNORED, ArrayLoader
from ._safety import declares_safe

# DataLoader settings that choose batches from the samples without looking at
# them, or only affect worker processes and pinned memory.
_ITERATOR_SETTINGS = _IGNORED | {
    "batch_size",
    "shuffle",
    "drop_last",
    "generator",
    "pin_memory",
    "multiprocessing_context",
    "in_order",
}

# NeuralNet methods that see the samples on their way from the array to the
# module while training (validation scoring predicts through the rest too).
_DATA_PATH_METHODS = (
    "partial_fit",
    "fit_loop",
    "check_data",
    "get_dataset",
    "get_split_datasets",
    "get_iterator",
    "run_single_epoch",
    "on_batch_begin",
    "on_batch_end",
    "train_step",
    "train_step_single",
    "validation_step",
    "evaluation_step",
    "get_loss",
    "infer",
    "forward",
    "forward_iter",
    "predict",
    "predict_proba",
)

# skorch callbacks that only keep books, score through predict, or act on the
# optimizer or gradients: safe while ``module_`` is the trainable rest. Exact
# classes: a subclass may do more.
_SAFE_CALLBACKS = (
    skorch_callbacks.BatchScoring,
    skorch_callbacks.EpochScoring,
    skorch_callbacks.EpochTimer,
    skorch_callbacks.GradientNormClipping,
    skorch_callbacks.LRScheduler,
    skorch_callbacks.PassthroughScoring,
    skorch_callbacks.PrintLog,
    skorch_callbacks.ProgressBar,
    skorch_callbacks.WarmRestartLR,
)


def is_cache_safe(callback):
    """Whether a callback class declares itself safe while the cache is used.

    A class marks itself with the class attribute ``sktransfer_safe = True``
    (or the earlier private ``_sktransfer_cache_safe = True``) in its own body
    (a subclass does not inherit the mark): it neither reads the samples nor
    reads or writes parameters of the frozen stage. See :mod:`._safety`.
    """
    return declares_safe(callback, legacy="_sktransfer_cache_safe")


def data_path_problem(net, net_class):
    """Why the samples' path from the array to the module may not be cached.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net, as ``fit`` trains it.
    net_class : type
        The skorch class the estimator builds (``NeuralNetClassifier`` or
        ``NeuralNetRegressor``), whose methods are trusted.

    Returns
    -------
    reason : str or None
        What on the path may look at the samples, or None when nothing does.
    """
    if net.dataset is not Dataset:
        return (
            f"the net's dataset {_name(net.dataset)} may transform the samples, "
            "which would receive the frozen stage's outputs instead"
        )
    if net.get_params_for("dataset"):
        return "the net's dataset__ settings may change the samples"
    validating = net.train_split is not None
    for name in ("iterator_train", "iterator_valid")[: 1 + validating]:
        iterator = getattr(net, name)
        if iterator not in (ArrayLoader, DataLoader):
            return (
                f"{name}={_name(iterator)} may transform the samples, which would "
                "receive the frozen stage's outputs instead"
            )
        extra = sorted(set(net.get_params_for(name)) - _ITERATOR_SETTINGS)
        if extra:
            return (
                f"{name}__{extra[0]} may see or change the samples (e.g. a "
                "collate_fn that augments them), which would receive the frozen "
                "stage's outputs instead"
            )
    if validating and not _known_split(net.train_split):
        return (
            f"train_split={net.train_split!r} is neither skorch's ValidSplit nor "
            "its predefined_split, and may change the training samples, which "
            "would be the frozen stage's outputs"
        )
    for method in _DATA_PATH_METHODS:
        if method in vars(net):
            return f"the net's {method} is replaced on the instance"
        if getattr(type(net), method, None) is not getattr(net_class, method, None):
            owner = next(c for c in type(net).__mro__ if method in vars(c))
            return (
                f"{owner.__name__}.{method} overrides skorch's and may see the "
                "samples, which would be the frozen stage's outputs"
            )
    return None


def callback_on_module(net_callbacks):
    """Return the name of a callback that may touch the module's parameters."""
    for name, callback in net_callbacks:
        if is_cache_safe(callback):
            continue
        if type(callback) is skorch_callbacks.EarlyStopping:
            if callback.load_best:
                return name
            continue
        if type(callback) not in _SAFE_CALLBACKS:
            return name
    return None


def _known_split(train_split):
    """Whether ``train_split`` is skorch's ``ValidSplit`` or ``predefined_split``.

    A ``ValidSplit`` splits the (cached) training data; the validation set of
    a ``predefined_split`` is run through the frozen stage by ``fit``
    (``_validation.encoded``).
    """
    if type(train_split) is ValidSplit:
        return True
    return isinstance(train_split, partial) and train_split.func is _make_split


def _name(obj):
    return getattr(obj, "__qualname__", None) or type(obj).__name__
