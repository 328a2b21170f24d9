"""Prediction's forward pass: the fitted module over slices of the rows.

skorch's ``forward(X, training=False)`` makes a dataset and an iterator, and
each batch goes through ``evaluation_step`` and ``infer`` (a mode switch, a
device move, a placeholder target). For a fitted net of skorch's own classes,
in evaluation mode, predicting validated rows in memory through
:class:`~sktransfer.ArrayLoader`, :func:`forward` runs the module over slices
of the rows itself: the same batches, in the same order, through the same
kernels, so the outputs are bit for bit skorch's. It writes nothing on the net
or the module. Anything else goes to the net's own ``forward``.

Each batch is a copy of the rows (so that a network that changes its input in
place changes neither the user's array nor the next call's answer) unless the
rows are a copy already (converted to the network's dtype) or every layer of
the network is one of torch's that only reads its input (:func:`reads_input`),
which then also runs under :func:`torch.inference_mode`.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.dataset import Dataset
from skorch.utils import to_device
from torch import nn

from .._common import predict_batch_size
from .._compat import _torch_module
from .._torch._modules import MLP
from . import _text
from ._data import _IGNORED, STREAM_LOCK, ArrayLoader
from ._step import LeanNeuralNetClassifier, LeanNeuralNetRegressor

# skorch's classes, whose forward path (get_dataset, get_iterator,
# evaluation_step, infer) the fast path reproduces; a subclass may change it.
_SKORCH_CLASSES = frozenset(
    {
        NeuralNetClassifier,
        NeuralNetRegressor,
        LeanNeuralNetClassifier,
        LeanNeuralNetRegressor,
    }
)

# Methods of that path; an instance attribute of one of these names replaces it.
_PATH = ("forward", "forward_iter", "get_dataset", "get_iterator", "infer")

# Layers whose forward only reads its input, as torch (or sktransfer) writes
# them, when not set ``inplace``. Exact classes: a subclass may do anything.
_READERS = frozenset(
    {
        MLP,
        nn.Sequential,
        nn.Identity,
        nn.Flatten,
        nn.Linear,
        nn.Bilinear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.Dropout,
        nn.ReLU,
        nn.LeakyReLU,
        nn.ELU,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softmax,
        nn.LogSoftmax,
    }
)


def reads_input(module):
    """Whether ``module`` in evaluation mode provably leaves its input unchanged.

    True when every submodule is of exactly one of torch's classes that only
    read their input (``Linear``, ``Conv2d``, ``ReLU``, ``Sequential``, ...,
    and sktransfer's :class:`~sktransfer.MLP`), none is set ``inplace``, and no
    forward hook is registered on any of them or globally. Anything else
    (a module class of the user's, a hook, a parametrization) may write.
    """
    if _torch_module._global_forward_pre_hooks or _torch_module._global_forward_hooks:
        return False
    for sub in module.modules():
        if type(sub) not in _READERS or getattr(sub, "inplace", False):
            return False
        if sub._forward_pre_hooks or sub._forward_hooks:
            return False
    return True


def _fast(net, X):
    """Whether ``forward`` may run ``net``'s module over slices of ``X`` itself."""
    if type(net) not in _SKORCH_CLASSES or any(name in vars(net) for name in _PATH):
        return False
    if net.iterator_valid is not ArrayLoader or net.dataset is not Dataset:
        return False
    if set(net.get_params_for("iterator_valid")) - _IGNORED - {"batch_size"}:
        return False
    if net.get_params_for("dataset"):
        return False
    if type(X) is not np.ndarray or X.dtype.kind not in "biuf" or X.ndim < 2:
        return False
    return not any(module.training for module in net.module_.modules())


def forward(net, X, *, copied=False):
    """Return the fitted ``net``'s outputs for validated rows ``X``, on the CPU.

    As ``net.forward(X, training=False)``, bit for bit.

    Parameters
    ----------
    net : skorch.NeuralNet
        The fitted net, its module in evaluation mode (as ``fit`` leaves it).
    X : ndarray of shape (n_samples, ...)
        Validated rows in the network's input dtype.
    copied : bool, default=False
        Whether ``X`` is a copy made for this call (converted to the
        network's dtype), which the network may then change in place.

    Returns
    -------
    out : torch.Tensor or tuple of torch.Tensor
        The module's outputs, concatenated over the batches; a tuple when the
        module returns one.
    """
    if not _fast(net, X):
        return net.forward(X, training=False)
    # Texts grouped by length (outputs put back in the input order), as the
    # lean step's forward does.
    return _text.in_length_order(
        net.module_, X, lambda rows, copy: _run(net, rows, copied or copy)
    )


def _run(net, X, copied):
    """:func:`forward`'s pass over the rows of ``X`` in their order."""
    module = net.module_
    reader = reads_input(module)
    device = net.device
    on_cpu = device is None or torch.device(device).type == "cpu"
    # A batch moved to another device is a copy already.
    copy = on_cpu and not (copied or reader)
    rows = torch.from_numpy(np.ascontiguousarray(X))
    size = predict_batch_size(net, len(rows))
    with STREAM_LOCK:  # ArrayLoader's draw, so that later random numbers match
        torch.empty((), dtype=torch.int64).random_()
    outputs = []
    # Standard layers keep no tensor between calls: inference mode is safe.
    # The outputs are joined outside it, into ordinary tensors.
    with torch.inference_mode() if reader else torch.no_grad():
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            if copy:
                batch = batch.clone()
            elif not on_cpu:
                batch = batch.to(device)
            outputs.append(to_device(module(batch), device="cpu"))
    if outputs and isinstance(outputs[0], tuple):
        return tuple(map(torch.cat, zip(*outputs, strict=True)))
    return torch.cat(outputs)
