"""The fast batch iterator: mini-batches as slices of whole tensors.

skorch's default data path is a :class:`torch.utils.data.DataLoader` over a
:class:`skorch.dataset.Dataset`: one ``__getitem__`` per sample, then
``default_collate`` stacks the samples of each batch. For data that is already
in memory that per-sample Python work is most of skorch's overhead over a
hand-written loop. :class:`ArrayLoader` is a drop-in replacement for skorch's
``iterator_train`` / ``iterator_valid``: it wraps the arrays as tensors once
and makes each batch with one indexing operation. It draws from torch's random
number generator exactly as ``DataLoader`` does, so a seeded fit gives the same
batches, and the same weights, on either path. Anything it does not handle (a
custom dataset, a ``collate_fn``, a sampler) goes to ``DataLoader`` unchanged.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse
from skorch.dataset import Dataset
from torch.utils.data import DataLoader, Subset, TensorDataset

# DataLoader settings that only matter for worker processes or pinned memory;
# batches sliced from tensors in memory need neither, so they are accepted and
# have no effect (pin_memory is honoured).
_IGNORED = frozenset(
    {
        "num_workers",
        "worker_init_fn",
        "persistent_workers",
        "prefetch_factor",
        "timeout",
        "pin_memory_device",
    }
)

# Held around each draw from torch's global stream here, so that it never
# lands inside test-time augmentation's own stream, which another thread may
# have swapped in (sktransfer._fit._augment.tta_average).
STREAM_LOCK = threading.RLock()


class WeightedTarget(NamedTuple):
    """A training batch's targets and their sample weights.

    What :class:`ArrayLoader` yields in place of the targets when it is given
    ``sample_weight``: ``batch[1].y`` are the targets, ``batch[1].sample_weight``
    the weights of the same samples (float32, shape (batch_size,)).
    """

    y: torch.Tensor
    sample_weight: torch.Tensor


def _as_tensor(array):
    """Return ``array`` as a tensor sharing its memory, or None if it cannot."""
    if isinstance(array, torch.Tensor):
        return array
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        return None
    with warnings.catch_warnings():
        # A read-only array is only ever read here.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(array))


class StreamedArray(torch.utils.data.Dataset):
    """Samples of an array on disk (a :class:`numpy.memmap`), read batch by batch.

    Only the rows of the current batch are read and converted to ``dtype``, so
    memory holds one batch, not the array. :class:`ArrayLoader` reads whole
    batches at once; any other loader reads it sample by sample.

    Parameters
    ----------
    X : numpy.ndarray of shape (n_samples, ...)
        The samples, typically a :class:`numpy.memmap`; any numeric dtype.
    y : numpy.ndarray of shape (n_samples, ...)
        The targets, in memory, as the loss expects them.
    dtype : numpy.dtype, default=numpy.float32
        The dtype the network takes the samples in (the transfer estimators
        set it from the network: int64 for one with an ``nn.Embedding``).
    """

    def __init__(self, X, y, dtype=np.float32):
        self.X = X
        self.y = torch.as_tensor(y)
        self.dtype = dtype

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.rows(i), self.y[i]

    def rows(self, index):
        """Return the samples at ``index`` (int, slice or index array) in ``dtype``."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(np.asarray(self.X[index], dtype=self.dtype))


class _SparseRows:
    """Rows of a SciPy sparse matrix, densified a batch at a time (its dtype)."""

    def __init__(self, X):
        self.X = X.tocsr()  # row slicing is cheap in CSR; still sparse

    def __len__(self):
        return self.X.shape[0]

    def rows(self, index):
        """Return the rows at ``index`` (slice or index tensor) as a dense tensor."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(self.X[index].toarray())


def _tensors_of(dataset):
    """``(X, y, indices)`` of a dataset made of whole arrays, else None.

    ``y`` is None where skorch would give a placeholder; ``indices`` selects
    the rows of a :class:`~torch.utils.data.Subset` (None: every row).
    """
    indices = None
    if isinstance(dataset, Subset):
        indices = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.int64)
        dataset = dataset.dataset
        if isinstance(dataset, Subset):
            return None
    # Subclasses of skorch's Dataset may transform samples: not ours to slice.
    if type(dataset) is Dataset:
        if sparse.issparse(dataset.X):
            X = _SparseRows(dataset.X)
            y = None if dataset.y is None else _as_tensor(dataset.y)
            if dataset.y is not None and (y is None or len(y) != len(X)):
                return None
            return X, y, indices
        X = _as_tensor(dataset.X)
        y = None if dataset.y is None else _as_tensor(dataset.y)
        if X is None or (dataset.y is not None and y is None):
            return None
        if X.ndim == 0 or (y is not None and len(y) != len(X)):
            return None
        return X, y, indices
    if type(dataset) is StreamedArray:
        return dataset, dataset.y, indices
    if type(dataset) is TensorDataset and len(dataset.tensors) == 2:
        X, y = dataset.tensors
        return X, y, indices
    return None


def _rows(X, index):
    """Rows of a tensor or a :class:`StreamedArray` at a slice or index tensor."""
    if isinstance(X, (StreamedArray, _SparseRows)):
        return X.rows(index)
    if isinstance(index, slice):
        # A copy, as DataLoader's collate makes one: a network that changes
        # its input in place must not change the user's array or the cache.
        return X[index].clone()
    return X.index_select(0, index.to(X.device))


class ArrayLoader:
    """Mini-batches of in-memory arrays, one indexing operation per batch.

    A drop-in replacement for :class:`torch.utils.data.DataLoader` as skorch's
    ``iterator_train`` and ``iterator_valid``, which the transfer estimators
    use by default. For a :class:`skorch.dataset.Dataset` of NumPy arrays or
    tensors (what skorch makes of in-memory ``X`` and ``y``), a
    :class:`~torch.utils.data.TensorDataset` of two tensors, or a
    :class:`~torch.utils.data.Subset` of either (skorch's validation split),
    each batch is a slice (or, shuffled, one ``index_select``) of the whole
    tensors (which share memory with the arrays; each batch is a copy, so a
    network that changes its input in place changes neither). An array on disk
    (``fit_source`` with a :class:`numpy.memmap`) is read a batch at a time,
    and a SciPy sparse matrix (CSR or CSC) is densified a batch at a time, never
    whole.
    Batches stay on the CPU; skorch moves each batch to the net's device.

    Shuffling draws from torch's random number generator exactly as
    ``DataLoader`` with a ``RandomSampler`` does, so that for the same seed
    both give the same batches in the same order, and the same random
    numbers to dropout after them.

    Any other dataset, or a setting this class does not implement
    (``collate_fn``, ``sampler``, ``batch_sampler``, ...), is handed to
    ``DataLoader`` with all the settings given.

    Read more in the :ref:`User Guide <performance>`.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        The data, as skorch's ``get_dataset`` returns it.
    batch_size : int, default=1
        Samples per batch.
    shuffle : bool, default=False
        Draw a new random order of the samples for each epoch.
    drop_last : bool, default=False
        Leave out the last batch when it is smaller than ``batch_size``.
    generator : torch.Generator, default=None
        Random number generator for the order; torch's global one if None.
    pin_memory : bool, default=False
        Copy each batch into pinned memory (for faster copies to a GPU).
    sample_weight : array-like of shape (n_samples,), default=None
        A weight per row of the dataset (of the whole dataset, for a
        ``Subset``). Each batch then yields a :class:`WeightedTarget` of its
        targets and their weights in place of the targets, for a ``get_loss``
        that weighs the per-sample losses (``fit(X, y, sample_weight)`` of the
        transfer estimators). Needs a dataset of whole arrays (no
        ``DataLoader`` fallback); a ValueError otherwise.
    transform : callable, default=None
        Called as ``transform(Xb, yb)`` on each batch, returning the batch to
        use: a per-batch transform of whole tensors (the estimators'
        ``augment``, MixUp and CutMix use it on training batches only). It
        must not change ``Xb`` in place: unshuffled batches are views of the
        data. With ``DataLoader`` (the fallback) it is applied to its batches.
    **kwargs : dict
        Other ``DataLoader`` settings. Those about worker processes are
        accepted and unneeded; any other sends the data through
        ``DataLoader``.

    Examples
    --------
    >>> import numpy as np
    >>> from skorch.dataset import Dataset
    >>> from sktransfer import ArrayLoader
    >>> X = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> loader = ArrayLoader(Dataset(X, np.arange(5)), batch_size=2)
    >>> [len(yb) for Xb, yb in loader]
    [2, 2, 1]
    """

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=False,
        drop_last=False,
        generator=None,
        pin_memory=False,
        sample_weight=None,
        transform=None,
        **kwargs,
    ):
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.pin_memory = pin_memory
        tensors = None if set(kwargs) - _IGNORED else _tensors_of(dataset)
        self._fallback = None
        if tensors is None:
            self._fallback = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
                generator=generator,
                pin_memory=pin_memory,
                **kwargs,
            )
        else:
            self._X, self._y, self._indices = tensors
        self._weights = None
        if sample_weight is not None:
            self._weights = _check_weights(sample_weight, tensors, dataset)

    @property
    def fast(self):
        """Whether batches are sliced from whole tensors (False: ``DataLoader``)."""
        return self._fallback is None

    def __len__(self):
        if self._fallback is not None:
            return len(self._fallback)
        n = self._n_samples()
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def _n_samples(self):
        return len(self._X) if self._indices is None else len(self._indices)

    def __iter__(self):
        if self._fallback is not None:
            if self.transform is None:
                return iter(self._fallback)
            return (self.transform(Xb, yb) for Xb, yb in self._fallback)
        # DataLoader draws a base seed for its workers each time it is
        # iterated, and RandomSampler a seed for its own generator; both draws
        # are repeated so that the random numbers used after them match.
        with STREAM_LOCK:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._batches()

    def _order_generator(self):
        """Return the generator of this epoch's order (seeded from torch's stream)."""
        generator = self.generator
        if generator is None:
            with STREAM_LOCK:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
        return generator

    def _index_batches(self):
        """Yield each batch's rows: a slice (in order) or a tensor of row indices."""
        n, size = self._n_samples(), self.batch_size
        order = self._indices
        if self.shuffle:
            perm = torch.randperm(n, generator=self._order_generator())
            order = perm if order is None else order[perm]
        stop = n - n % size if self.drop_last else n
        for start in range(0, stop, size):
            if order is None:
                yield slice(start, start + size)
            else:
                yield order[start : start + size]

    def _batches(self):
        for idx in self._index_batches():
            if isinstance(idx, slice):
                Xb = _rows(self._X, idx)
                yb = None if self._y is None else self._y[idx]
            else:
                Xb = _rows(self._X, idx)
                yb = None if self._y is None else _rows(self._y, idx)
            if yb is None:
                # skorch's placeholder target, as DataLoader would collate it.
                yb = torch.zeros(len(Xb), 1)
            if self.transform is not None:
                Xb, yb = self.transform(Xb, yb)
            if self.pin_memory:
                # A cache kept on the GPU is already where it is needed.
                Xb, yb = (_pinned(t) for t in (Xb, yb))
            if self._weights is not None:
                wb = (
                    self._weights[idx]
                    if isinstance(idx, slice)
                    else self._weights.index_select(0, idx)
                )
                yb = WeightedTarget(yb, wb)
            yield Xb, yb


def _check_weights(sample_weight, tensors, dataset):
    """Return ``sample_weight`` as a float32 tensor, one weight per dataset row."""
    if tensors is None:
        msg = (
            f"sample_weight travels with the batches that ArrayLoader slices from "
            f"whole arrays, but its dataset, a {type(dataset).__name__}, goes "
            "through torch's DataLoader sample by sample. Pass X and y as arrays."
        )
        raise ValueError(msg)
    weights = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
    n_rows = len(tensors[0])
    if weights.shape != (n_rows,):
        msg = (
            f"sample_weight has shape {tuple(weights.shape)}; ArrayLoader needs "
            f"one weight per row of its dataset, shape ({n_rows},)."
        )
        raise ValueError(msg)
    return weights


def _pinned(batch):
    """``batch`` in pinned memory, unless on a GPU already or not a tensor."""
    if not isinstance(batch, torch.Tensor) or batch.is_cuda:
        return batch
    return batch.pin_memory()


# Rows checked for non-finite values at a time when validating an array on disk.
_CHECK_CHUNK_BYTES = 64 * 2**20


def check_on_disk(X):
    """Validate a :class:`numpy.memmap` of samples without reading it into memory.

    Numeric, at least 2-D, at least one sample, and finite, checked a chunk of
    rows at a time.
    """
    if X.dtype.kind not in "biuf":
        msg = (
            f"The source array on disk has dtype {X.dtype}; sktransfer reads "
            "numeric samples (bool, integer or float), read in the dtype the "
            "network takes."
        )
        raise ValueError(msg)
    if X.ndim < 2 or len(X) == 0:
        msg = (
            f"The source array on disk has shape {X.shape}; it must be "
            "(n_samples, n_features) or (n_samples, ...) with n_samples >= 1."
        )
        raise ValueError(msg)
    if X.dtype.kind == "f":
        row_bytes = max(1, X[0].nbytes)
        step = max(1, _CHECK_CHUNK_BYTES // row_bytes)
        for start in range(0, len(X), step):
            if not np.isfinite(X[start : start + step]).all():
                msg = (
                    "The source array on disk contains NaN or infinity (in rows "
                    f"{start} to {min(start + step, len(X)) - 1}); the network "
                    "needs finite inputs."
                )
                raise ValueError(msg)


def dataset_targets(dataset):
    """Return every target of a ``(sample, target)`` dataset as an array.

    Uses the dataset's ``targets`` attribute where it has one (torchvision's
    convention); otherwise reads the dataset once, keeping only the targets.
    """
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return np.asarray(targets.cpu() if torch.is_tensor(targets) else targets)
    parts = []
    for batch in DataLoader(dataset, batch_size=256):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            msg = (
                f"A {type(dataset).__name__} given as source data must yield "
                "(sample, target) pairs; it yields "
                f"{type(batch).__name__} batches."
            )
            raise ValueError(msg)
        target = batch[1]
        parts.append(np.asarray(target.cpu() if torch.is_tensor(target) else target))
    return np.concatenate(parts)
