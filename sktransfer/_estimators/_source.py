"""The source task: pretraining, and pretrained weights in and out.

``_SourceTask`` is the part of the transfer estimators that owns the
pretrained weights: ``fit_source`` (in memory, from an array on disk, or from a
torch ``Dataset``), ``save_source`` / ``load_source`` and their checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.validation import check_X_y
from skorch import NeuralNet
from torch import nn
from torch.utils.data import Dataset

from .._common import (
    _CHECK_X,
    _PROBE_ROWS,
    _dense_rows,
    _is_2d,
    _seeded,
    _unchanged_on_error,
    _writable,
)
from .._compat import _fit_context
from .._fit import _guard, _inputs, _validation
from .._pretrained import _io
from .._pretrained._record import _Pretrained
from .._skorch import _frozen, _text, _weights
from .._skorch._data import StreamedArray, check_on_disk, dataset_targets
from .._torch import _hf, _layers, _probe, _transfer
from .._version import __version__

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self


class _SourceTask:
    """Pretraining and pretrained weights; a base of ``_BaseTransfer``."""

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_source(
        self,
        X: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> Self:
        """Pretrain the network on the source task.

        Every layer trains (``frozen`` applies to fine-tuning only), with the
        ``net`` template's settings updated by ``source_params``. The weights it
        learns are kept as the starting point of every later :meth:`fit`,
        also in clones made by :func:`sklearn.base.clone`. The source may have
        other classes (other values, another number) or other targets than the
        target task. Its samples need the target's shape only where the
        network does (a network with global pooling fine-tunes on images of
        another size). Column names of ``X`` (a DataFrame) are kept, and
        :meth:`fit` checks the target's columns against them, as scikit-learn
        checks the columns given to ``predict`` against those of ``fit``.

        Source data bigger than memory streams from disk: a
        :class:`numpy.memmap` ``X`` is read one batch at a time (and converted
        to float32 batch by batch), and a :class:`torch.utils.data.Dataset`
        goes through skorch's data path, which reads it sample by sample.

        Parameters
        ----------
        X : array-like, numpy.memmap or torch.utils.data.Dataset
            Source samples, of shape (n_samples, n_features) or
            (n_samples, ...); image arrays such as (n, C, H, W) are accepted. A
            ``Dataset`` yields ``(sample, target)`` pairs, the targets as the
            loss takes them: class indices 0 to n_classes - 1 for a classifier,
            float32 targets for a regressor. Its targets are read once before
            training (from its ``targets`` attribute if it has one, such as
            torchvision's data sets, else by one pass over it).
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Source labels or targets; None when ``X`` is a ``Dataset``.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each source sample in the pretraining loss (each
            mini-batch's loss is ``sum(w * loss) / sum(w)``, as in
            :meth:`fit`), e.g. the importance weights of instance-based
            transfer (the density ratio of target to source). Not for a
            ``Dataset`` ``X``. ``class_weight`` does not apply to pretraining.

        Returns
        -------
        self : object
            The estimator, pretrained and not yet fitted on the target.
        """
        _inputs.check_source_params(self.source_params)
        X = _text.encode_inputs(self, X, fitting=True)  # texts, dicts: _text.py
        names = _inputs.source_feature_names(X)
        data, y_enc, n_outputs, fitted, probe = self._source_data(X, y)
        weights = None
        if sample_weight is not None:
            if isinstance(X, Dataset):
                msg = (
                    f"fit_source got a {type(X).__name__} and sample_weight; "
                    "weights travel with batches sliced from arrays. Pass X and y "
                    "as arrays (a numpy.memmap X streams from disk)."
                )
                raise ValueError(msg)
            weights = _weights.sample_weights(sample_weight, data)
        with (
            _unchanged_on_error(self),
            _seeded(self.random_state, "source"),
            _frozen.fit_scope(),
        ):
            net, _ = self._build_net(probe, n_outputs, phase="source")
            data, probe = _network_dtype(net, data, probe)
            data, y_enc = self._scale_y(net, probe, data, y_enc, fitted, weights)
            _weights.install(net, weights)
            self._announce("Pretraining on the source task", data, n_outputs)
            with (
                _validation.encoded(net, probe, fitted, n_outputs),
                _guard.training(self, net, "source", probe=probe),
            ):
                net.partial_fit(data, y_enc)
            self._pretrained = _Pretrained(
                state_dict=_io.cpu_state(net.module_.state_dict()),
                sample_shape=tuple(probe.shape[1:]),
                n_outputs=n_outputs,
                classes=fitted.get("classes_"),
                history=net.history_.to_list(),
                feature_names=names,
            )
            _inputs.clear_fitted(self)  # a fit on another target is stale
        return self

    def save_source(self, path: str | os.PathLike | BinaryIO) -> None:
        """Write the pretrained weights to a file that is safe to open.

        The file holds the weights as tensors and, to check them on load, each
        parameter's name and shape, the source's sample shape, outputs and
        classes, the pretraining history and the sktransfer version. It is
        ``torch.save`` of plain data, which :meth:`load_source` reads only with
        ``torch.load(weights_only=True)``: opening a file can never run code.
        The file is written whole or not at all.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            Where to write.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If there are no pretrained weights (no :meth:`fit_source`,
            :meth:`load_source` or module instance as ``net``).
        """
        record = self._source_record()
        if record is None:
            msg = (
                f"This {type(self).__name__} has no pretrained weights to save; "
                "call fit_source(X, y) or load_source(source) first."
            )
            raise NotFittedError(msg)
        _io.save(record, path, version=__version__, estimator=type(self).__name__)

    @_fit_context(prefer_skip_nested_validation=True)
    def load_source(self, source: Any) -> Self:
        """Set the pretrained weights as if :meth:`fit_source` had run.

        Parameters
        ----------
        source : path, state dict, torch.nn.Module, skorch net or estimator
            Where the weights come from:

            - a file written by :meth:`save_source` (a path or a binary file
              object), read with ``torch.load(weights_only=True)``; any other
              file, in particular a pickle that would run code, is refused;
            - a ``state_dict``: a mapping of parameter names to tensors;
            - a ``torch.nn.Module`` trained elsewhere, or an initialized skorch
              net (its ``module_``);
            - another sktransfer estimator: its fitted network if it is fitted
              (sequential transfer), else its pretrained weights.

            The weights are copied to the CPU; ``fit`` moves them to the net's
            device.

        Returns
        -------
        self : object
            The estimator, pretrained and not yet fitted on the target.

        Raises
        ------
        ValueError
            If the file is not one :meth:`save_source` writes, or if a shared
            parameter is missing from the weights or has another shape (each
            one is named with the expected and found shape; the head may
            differ, since it is rebuilt for the target). Nothing is changed.
        TypeError
            If ``source`` is none of the above.
        """
        record = self._read_source(source)
        self._check_source(record)
        self._pretrained = record
        _inputs.clear_fitted(self)  # a fit from other weights is stale
        return self

    @property
    def source_weights_(self) -> dict[str, torch.Tensor]:
        """The pretrained weights: the ``state_dict`` after :meth:`fit_source`.

        A dict of parameter and buffer names to CPU tensors; read-only.
        """
        return self._get_pretrained().state_dict

    @property
    def source_feature_names_in_(self) -> np.ndarray | None:
        """The column names seen by :meth:`fit_source`, or None without names.

        :meth:`fit` checks the target's columns against them.
        """
        return self._get_pretrained().feature_names

    @property
    def source_history_(self) -> list[dict]:
        """The pretraining epochs: skorch's history as a list of dicts."""
        return self._get_pretrained().history

    # --------------------------------------------------------------- internals

    def _source_data(self, X, y):
        """Validate source data for pretraining.

        Returns what ``partial_fit`` gets (data and targets), the number of
        outputs, the fitted label attributes, and the first samples (up to
        64, in the dtype given) as an array of shape (n, ...) to build and
        probe the network with.
        """
        if isinstance(X, Dataset):
            if y is not None:
                msg = (
                    f"fit_source got a {type(X).__name__} and y; a Dataset yields "
                    "its own (sample, target) pairs, so pass y=None."
                )
                raise ValueError(msg)
            targets = dataset_targets(X)
            y_enc, n_outputs, fitted = self._encode_y(targets)
            classes = fitted.get("classes_")
            if classes is not None and not np.array_equal(
                classes, np.arange(len(classes))
            ):
                msg = (
                    f"The targets of a Dataset given to fit_source reach the loss "
                    f"as they are, so they must be class indices 0 to n_classes - "
                    f"1; found classes {classes!r}. Map them to 0..n-1 in the "
                    "dataset."
                )
                raise ValueError(msg)
            samples = [X[i][0] for i in range(min(len(X), _PROBE_ROWS))]
            probe = np.stack(
                [np.asarray(s.cpu() if torch.is_tensor(s) else s) for s in samples]
            )
            return X, y_enc, n_outputs, fitted, probe
        if isinstance(X, np.memmap):
            check_on_disk(X)
            y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
            if not self._multi_output and y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
            y_enc, n_outputs, fitted = self._encode_y(y)
            probe = np.array(X[:_PROBE_ROWS])
            return StreamedArray(X, y_enc), y_enc, n_outputs, fitted, probe
        X, y = check_X_y(
            X,
            y,
            **_CHECK_X,
            multi_output=self._multi_output or _is_2d(y),
            estimator=self,
        )
        X = _writable(X)
        y_enc, n_outputs, fitted = self._encode_y(y)
        return X, y_enc, n_outputs, fitted, _dense_rows(X, _PROBE_ROWS)

    def _source_record(self):
        """Return the pretrained weights, or None.

        ``fit`` starts from them unless ``pretrained=False``, which ignores
        them without forgetting them.
        """
        record = getattr(self, "_pretrained", None)
        module = self.net.module if isinstance(self.net, NeuralNet) else self.net
        if record is None and isinstance(module, nn.Module):
            record = _io.from_module(module)
        if record is None and _hf.as_spec(self.net) is not None:  # _hf.py
            record = _io.from_module(_hf.as_spec(self.net).build())
        return record

    def _read_source(self, source):
        """Turn what ``load_source`` accepts into a pretrained-weights record."""
        if isinstance(source, _SourceTask):
            if hasattr(source, "net_"):
                classes = getattr(source, "classes_", None)
                n_outputs = getattr(source, "n_outputs_", None)
                return _Pretrained(
                    state_dict=_io.cpu_state(source.net_.module_.state_dict()),
                    sample_shape=source._sample_shape,
                    n_outputs=len(classes) if classes is not None else n_outputs,
                    classes=classes,
                    history=source.net_.history.to_list(),
                    feature_names=getattr(source, "feature_names_in_", None),
                )
            record = source._source_record()
            if record is None:
                msg = (
                    f"The {type(source).__name__} given to load_source is neither "
                    "pretrained nor fitted; it has no weights to load."
                )
                raise ValueError(msg)
            return record
        if isinstance(source, NeuralNet):
            if not getattr(source, "initialized_", False):
                msg = (
                    f"The {type(source).__name__} given to load_source is not "
                    "initialized; it has no weights to load."
                )
                raise ValueError(msg)
            return _io.from_module(source.module_)
        if isinstance(source, nn.Module):
            return _io.from_module(source)
        if isinstance(source, Mapping):
            return _io.from_state_dict(source)
        if isinstance(source, (str, os.PathLike)) or hasattr(source, "read"):
            return _io.read(source)
        msg = (
            "load_source takes a file written by save_source (path or binary file "
            "object), a state_dict, a torch.nn.Module, an initialized skorch net "
            f"or a sktransfer estimator; got {type(source).__name__}."
        )
        raise TypeError(msg)

    def _check_source(self, record):
        """Check that ``record`` fits the network; raise a ValueError naming misfits.

        The network is built without touching torch's global random state. When
        its size depends on the data (a module class taking ``n_features_in``)
        and the record does not say the sample shape, ``fit`` checks instead.
        """
        net = self._template()
        shape = record.sample_shape or (1,)
        sizes = self._module_sizes(
            net, np.zeros((1, *shape), np.float32), record.n_outputs or 2
        )
        if record.sample_shape is None and "module__n_features_in" in sizes:
            return
        net.set_params(verbose=0, device="cpu", **sizes)
        with torch.random.fork_rng():
            module = net.initialize().module_
            if _probe.has_lazy(module):
                if record.sample_shape is None:
                    return  # lazy layers take their sizes from data: fit checks
                dtype = torch.int64 if _probe.takes_indices(module) else None
                _probe.materialize(module, torch.zeros((2, *shape), dtype=dtype))
        head = _layers.resolve_head(module, self.head)
        if not head and record.n_outputs is None:
            # head=None keeps the output layer, whose size is the target's and
            # unknown to a bare state dict: fit checks that layer.
            try:
                head = _layers.resolve_head(module, "auto")
            except ValueError:
                head = []
        _transfer.check_weights(module.state_dict(), record.state_dict, skip=head)

    def _get_pretrained(self):
        pretrained = getattr(self, "_pretrained", None)
        if pretrained is None:
            msg = (
                f"This {type(self).__name__} has no pretrained weights; call "
                "fit_source(X, y) first."
            )
            raise AttributeError(msg)
        return pretrained


def _network_dtype(net, data, probe):
    """Return the source data and probe in the dtype the network takes them.

    Arrays in memory are converted once, an array on disk a batch at a time
    as it is read (checked whole first); a torch ``Dataset`` of the user's
    yields its samples as they are, as in skorch.
    """
    dtype = _inputs.input_dtype(net.module_, probe.dtype)
    if isinstance(data, StreamedArray):
        _inputs.check_lossless(data.X, dtype)
        data.dtype = dtype
    elif isinstance(data, Dataset):
        return data, probe
    else:
        data = _writable(_inputs.as_input(data, dtype))
    return data, _inputs.rows_as_input(probe, dtype)
