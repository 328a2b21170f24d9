"""A network run on a few samples without a trace: modes, lazy layers, output shapes."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ._layers import _listing

# Layers whose input is integer indices: a network holding one takes integer
# (and bool) X as int64, as torch.nn.functional.embedding needs.
INDEX_LAYERS = (nn.Embedding, nn.EmbeddingBag)


def takes_indices(module: nn.Module) -> bool:
    """Whether ``module`` holds a layer that takes integer indices as input."""
    return any(isinstance(sub, INDEX_LAYERS) for sub in module.modules())


@contextmanager
def modes_restored(module: nn.Module):
    """Put each submodule of ``module`` back in its mode when the block ends."""
    modes = [(sub, sub.training) for sub in module.modules()]
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


@contextmanager
def evaluating(module: nn.Module):
    """Run ``module`` in evaluation mode without gradients inside the block.

    The modes of its submodules are put back afterwards, so probing a network
    changes neither its BatchNorm statistics nor its training state.
    """
    with modes_restored(module), torch.no_grad():
        module.eval()
        yield module


@contextmanager
def recording_calls(module: nn.Module, names: Sequence[str]):
    """Record which of the submodules ``names`` run inside the block.

    Yields the set of names whose forward ran; the hooks are removed when the
    block ends.
    """
    called: set[str] = set()
    handles = [
        module.get_submodule(name).register_forward_hook(
            lambda *_, name=name: called.add(name)
        )
        for name in names
    ]
    try:
        yield called
    finally:
        for handle in handles:
            handle.remove()


def check_head_runs(head: Sequence[str], called: set, spec: object) -> None:
    """Raise a ValueError when no head submodule runs in ``forward``.

    A head that ``forward`` does not call would be rebuilt and trained for
    nothing, while the layer that really makes the output kept its source
    weights.
    """
    idle = [name for name in head if name not in called]
    # One head part may run only while training (an auxiliary classifier); a
    # head none of whose parts runs is certainly not the output.
    if head and len(idle) == len(head):
        msg = (
            f"head={spec!r} resolved to {list(head)}, but forward never calls "
            f"{_listing(idle)}: rebuilding it would leave the layer that makes "
            "the output with its source weights. Name the submodule(s) that "
            "forward ends in with head=..."
        )
        raise ValueError(msg)


def has_lazy(module: nn.Module) -> bool:
    """Whether ``module`` has lazy layers whose parameters are not sized yet."""
    return any(
        isinstance(t, nn.parameter.UninitializedTensorMixin)
        for t in (*module.parameters(), *module.buffers())
    )


def materialize(module: nn.Module, X: torch.Tensor) -> None:
    """Size the lazy layers of ``module`` with one forward pass on ``X``.

    Lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``, ``nn.LazyBatchNorm2d``,
    ...) create their parameters on their first forward; weights can only be
    copied into them after it. The pass runs on the whole batch ``X`` (a few
    training rows) in evaluation mode, without gradients, the modes put back.
    """
    with evaluating(module):
        module(X)


@contextmanager
def training_conditions(module: nn.Module, device=None):
    """Run ``module`` as a training step does, but without leaving a trace.

    Inside the block the module is in training mode (as skorch puts it before
    every training batch) and gradients are off; when the block ends, every
    buffer (BatchNorm's running statistics and batch count) has its value
    back, each submodule its mode, and torch's random number generators
    (CPU, and ``device`` if it is an accelerator) their state, so that a check run
    here changes neither the network nor the random numbers training draws.
    """
    saved = {
        name: buf.detach().clone()
        for name, buf in module.named_buffers()
        if not isinstance(buf, nn.parameter.UninitializedTensorMixin)
    }
    if device is None:  # where the module's weights are
        device = next((t.device for t in module.parameters()), "cpu")
    device = torch.device(device)
    accelerator = device.type if device.type != "cpu" else "cuda"
    forked = [device.index or 0] if device.type != "cpu" else []
    try:
        with modes_restored(module), torch.no_grad():
            with torch.random.fork_rng(devices=forked, device_type=accelerator):
                module.train()
                yield module
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])


def failed_on(module: nn.Module, X: torch.Tensor, exc: BaseException) -> str:
    """Return what to say when ``module`` raises ``exc`` on the batch ``X``.

    The module's own error first, then what it was given: how many samples,
    their shape and dtype, and, for floating samples given to a network
    with an embedding layer, that such a layer takes integer indices.
    """
    shape, dtype = tuple(X.shape[1:]), str(X.dtype).removeprefix("torch.")
    # A network of one's own on texts is named, not the package's wrapper.
    name = getattr(module, "network_name", type(module).__name__)
    msg = (
        f"{name} failed on a batch of {len(X)} training samples "
        f"of shape {shape} and dtype {dtype} ({type(exc).__name__}: {exc})."
    )
    sizes = [
        layer.num_embeddings
        for layer in module.modules()
        if isinstance(layer, (nn.Embedding, nn.EmbeddingBag))
    ]
    if hasattr(module, "network_name") and sizes and len(X):
        top = int(X[:, 0].max())  # the token ids of packed texts
        if top >= min(sizes):
            msg += (
                f" The texts' largest token id is {top}, but the network's "
                f"nn.Embedding takes ids below {min(sizes)}: build it with the "
                "tokenizer's vocabulary size (len(tokenizer))."
            )
    if X.dtype.is_floating_point and takes_indices(module):
        msg += (
            " The network holds an nn.Embedding or nn.EmbeddingBag, whose input is "
            "integer indices: pass X as an integer array to give it int64 samples."
        )
    return msg


def output_shape(module: nn.Module, X: torch.Tensor, device=None) -> tuple[int, ...]:
    """Return the shape of ``module(X)`` per sample, without side effects.

    The module runs once on the whole batch ``X`` (at least two of the
    user's training samples, since a training batch never has fewer) in
    :func:`training_conditions`: training mode, no gradients, buffers, modes
    and random state put back.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    X : torch.Tensor
        A batch of samples, on the module's device.
    device : str or torch.device, default=None
        Where the module runs (for the random state of a GPU).

    Returns
    -------
    shape : tuple of int
        The output's shape without the batch dimension.

    Raises
    ------
    ValueError
        If the module raises on this batch; the message starts with the
        module's own error, which is chained.
    """
    return per_sample_shape(run_in_training_conditions(module, X, device))


def run_in_training_conditions(module, X, device=None):
    """Return ``module(X)`` computed in :func:`training_conditions`.

    A failure of the module is a ValueError that carries its message (see
    :func:`failed_on`) and chains it.
    """
    try:
        with training_conditions(module, device):
            out = module(X)
    except Exception as exc:  # noqa: BLE001 (any error of the user's module)
        raise ValueError(failed_on(module, X, exc)) from exc
    return out


def per_sample_shape(out) -> tuple[int, ...]:
    """Return the shape of a batch of outputs without the batch dimension."""
    if not isinstance(out, torch.Tensor):
        msg = (
            f"The network returned {type(out).__name__}; the estimators need a "
            "network whose forward returns a single tensor."
        )
        raise TypeError(msg)
    return tuple(out.shape[1:])
