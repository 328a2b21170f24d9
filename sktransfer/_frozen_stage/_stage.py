"""The split network: a frozen stage, the trainable rest, and the stage's outputs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from scipy import sparse
from torch import nn

from .._skorch import _text
from .._torch._probe import modes_restored
from . import _store


@dataclass(frozen=True)
class FrozenStage:
    """A network split at the end of its frozen leading stage.

    Attributes
    ----------
    stage : torch.fx.GraphModule or torch.nn.Module
        The frozen stage: the network's input to the cut's output (a traced
        graph, or the network's own ``forward_features`` for a declared cut).
    rest : torch.fx.GraphModule or torch.nn.Module
        The trainable rest: the cut's output to the network's output (or the
        network's ``forward_head``). Its layers and parameters are the
        original module's own objects.
    cut : str
        The traced node the network is cut after, e.g. ``"features_4"``, or
        ``"forward_features"`` for a cut the network declares.
    sample_shape : tuple of int
        The shape of the stage's output for one sample.
    dtype : torch.dtype
        The dtype of the stage's output.
    reuse : tuple or None
        ``(owner, settings)`` of :func:`sktransfer._frozen_stage._store.key` when the
        stage's weights are a pretrained record's: its outputs are shared
        with the other fits from that record (:meth:`outputs`).
    """

    stage: nn.Module
    rest: nn.Module
    cut: str
    sample_shape: tuple[int, ...]
    dtype: torch.dtype
    reuse: tuple | None = field(default=None, compare=False, repr=False)

    def nbytes(self, n_samples):
        """Return the size of the cached outputs of ``n_samples`` samples."""
        per_sample = torch.Size(self.sample_shape).numel()
        return n_samples * per_sample * self.dtype.itemsize

    def transform(self, X, *, batch_size, device, keep_on="cpu"):
        """Return the stage's output for ``X``, computed in batches on ``device``.

        The outputs are kept on ``keep_on`` (see :func:`cache_device`). The
        stage runs in evaluation mode without gradients; the modes of its
        layers are restored afterwards.
        """
        is_sparse = sparse.issparse(X)
        # Texts grouped by length, so that each batch is cut to a similar
        # length (the outputs are written back in the input order).
        owner = self.stage.__dict__.get("owner", self.stage)
        order = None if is_sparse else _text.length_order(owner, _numpy(X))
        X = X if is_sparse else torch.as_tensor(X)
        n_samples = X.shape[0]
        with modes_restored(self.stage), torch.no_grad():
            self.stage.eval()
            out = None
            for start in range(0, n_samples, batch_size):
                if order is not None:  # rows taken by index: a copy
                    where = torch.as_tensor(order[start : start + batch_size])
                    rows = X[where]
                elif is_sparse:  # densified a batch at a time
                    where = slice(start, start + batch_size)
                    rows = torch.from_numpy(X[where].toarray())
                else:  # a view of the user's rows: a stage writing its
                    where = slice(start, start + batch_size)
                    rows = X[where].clone()  # input must not change them
                chunk = self.stage(rows.to(device))
                if out is None:
                    out = torch.empty(
                        (n_samples, *chunk.shape[1:]),
                        dtype=chunk.dtype,
                        device=keep_on,
                    )
                if order is None:
                    out[where] = chunk
                else:
                    out[where.to(out.device)] = chunk.to(out.device)
        return out

    def outputs(self, X, *, batch_size, device, keep_on="cpu", report=None):
        """As :meth:`transform`, reusing the rows stored by earlier fits.

        See :func:`sktransfer._frozen_stage._store.outputs`.
        """
        how = {"batch_size": batch_size, "device": device, "keep_on": keep_on}
        return _store.outputs(self, X, report=report, **how)

    @contextmanager
    def training_rest(self, net):
        """Let the skorch ``net`` train the rest, on cached stage outputs, inside."""
        module = net.module_
        net.module_ = self.rest
        try:
            yield
        finally:
            net.module_ = module


def _numpy(X):
    return X.detach().cpu().numpy() if torch.is_tensor(X) else X


def cache_device(device, nbytes):
    """Where to keep a cache of ``nbytes`` for a network on ``device``.

    On a GPU when it takes at most half of the GPU's free memory, so that no
    epoch copies it from the host; otherwise on the CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= free // 2:
            return device
    return torch.device("cpu")
