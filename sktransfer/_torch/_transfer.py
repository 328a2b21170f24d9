"""Weights moved into a network: shared ones copied, layers reset, the head resized."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from skorch.utils import freeze_parameter
from torch import nn

from .._common import warn_at_user
from ._layers import _listing, is_under


def transfer_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], skip: Sequence[str] = ()
) -> list[str]:
    """Copy the shared weights (parameters and buffers) from ``state`` into ``module``.

    Every entry of ``module.state_dict()`` that is not under a submodule named in
    ``skip`` must be present in ``state`` with the same shape. Entries of
    ``state`` the module does not have (the source's head) are ignored.

    Parameters
    ----------
    module : torch.nn.Module
        The network to load into; modified in place.
    state : mapping of str to torch.Tensor
        The source weights, e.g. a ``state_dict()``.
    skip : sequence of str, default=()
        Submodule names (the head) whose weights are not transferred.

    Returns
    -------
    keys : list of str
        The state keys copied.

    Raises
    ------
    ValueError
        Naming every missing entry and every shape mismatch, before anything is
        copied.
    """
    target = module.state_dict()
    keys = check_weights(target, state, skip)
    with torch.no_grad():
        for key in keys:
            target[key].copy_(state[key])
    return keys


def check_weights(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    skip: Sequence[str] = (),
) -> list[str]:
    """Check that ``state`` holds every entry of ``target`` outside ``skip``.

    Returns the keys to copy; raises a ValueError naming every missing entry
    and every shape mismatch (expected and found shape).
    """
    keys = [key for key in target if not is_under(key, skip)]
    problems = []
    for key in keys:
        if key not in state:
            problems.append(f"{key!r} is missing from the source weights")
        elif tuple(state[key].shape) != tuple(target[key].shape):
            problems.append(
                f"{key!r} has shape {tuple(target[key].shape)} in the network but "
                f"{tuple(state[key].shape)} in the source weights"
            )
    if problems:
        msg = (
            "The source weights do not fit the network: "
            + "; ".join(problems)
            + ". Shared layers must have the same names and shapes in the source "
            "and the target network; layers listed in head are exempt."
            + _prefix_hint(keys, state)
        )
        raise ValueError(msg)
    return keys


def _prefix_hint(keys, state):
    """Say how to strip a prefix the source names carry (``module.``, ``model.``)."""
    missing = [key for key in keys if key not in state]
    if not missing:
        return ""
    for name in state:
        if name.endswith("." + missing[0]):
            prefix = name[: -len(missing[0])]
            if all(prefix + key in state for key in missing):
                return (
                    f" The source names carry the prefix {prefix!r} (as "
                    "DataParallel or a training framework adds); strip it: "
                    f"{{k.removeprefix({prefix!r}): v for k, v in state.items()}}."
                )
    return ""


def reset_all(module: nn.Module) -> list[str]:
    """Re-initialise every layer of ``module`` as its constructor does.

    A ``transformers`` model (a :class:`~sktransfer._torch._hf.TransformerNet`'s
    or the module itself) gets the weights of a model built afresh from its
    config: Hugging Face's own initialisation (normal with
    ``config.initializer_range`` for linear and embedding weights, zero biases,
    unit layer norms), which torch's ``reset_parameters`` would not give (a
    word embedding of standard deviation 1 instead of 0.02). Every other layer
    that has ``reset_parameters`` runs it.

    Returns
    -------
    kept : list of str
        The parameters and buffers that no ``reset_parameters`` covers (held
        directly by a module that has none, such as a ViT's ``pos_embed`` or a
        custom buffer): they keep their values.
    """
    from ._hf import is_hf_model

    model = module.__dict__.get("model", module)
    covered = set()
    if is_hf_model(model):
        built = type(model)(model.config)  # its own initialisation
        fresh = {**dict(built.named_parameters()), **dict(built.named_buffers())}
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        with torch.no_grad():
            for name, tensor in tensors.items():
                if name in fresh and fresh[name].shape == tensor.shape:
                    tensor.copy_(fresh[name])
                    covered.add(name)
    kept = []
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        own = [
            *(prefix + n for n, _ in sub.named_parameters(recurse=False)),
            *(prefix + n for n, _ in sub.named_buffers(recurse=False)),
        ]
        if own and all(n in covered for n in own):
            continue
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        kept += own
    return kept


def warn_not_reset(kept: Sequence[str], owner: str) -> None:
    """Warn that ``pretrained=False`` leaves the tensors ``kept`` as they were."""
    if not kept:
        return
    msg = (
        f"pretrained=False re-initialised the network's layers with their "
        f"reset_parameters(), but {len(kept)} tensor(s) belong to modules without "
        f"one and keep the values the module instance came with: "
        f"{_listing(list(kept))}. To train from scratch, pass the module class "
        f"(or a factory that builds fresh weights) as net of the {owner}."
    )
    warn_at_user(msg, UserWarning)


def reset_head(module: nn.Module, head: Sequence[str]) -> None:
    """Re-initialise the head's layers with their own ``reset_parameters``.

    Parameters
    ----------
    module : torch.nn.Module
        The network; modified in place.
    head : sequence of str
        Submodule names, as returned by :func:`resolve_head`.
    """
    for name in head:
        for sub in module.get_submodule(name).modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def resize_head(module: nn.Module, head: Sequence[str], n_outputs: int) -> str | None:
    """Give the head's last ``nn.Linear`` layer ``n_outputs`` outputs.

    The last ``nn.Linear`` among the head's submodules (in the order given, then
    module order) is replaced by a freshly initialised one with the same input
    size, bias, device and dtype when its output size differs from ``n_outputs``.

    Parameters
    ----------
    module : torch.nn.Module
        The network; modified in place.
    head : sequence of str
        Submodule names, as returned by :func:`resolve_head`.
    n_outputs : int
        The number of outputs the task needs.

    Returns
    -------
    name : str or None
        The name of the replaced layer, or ``None`` if nothing changed.
    """
    last = None
    for name in head:
        for sub_name, sub in module.get_submodule(name).named_modules():
            if isinstance(sub, nn.Linear):
                last = (f"{name}.{sub_name}" if sub_name else name, sub)
    if last is None or last[1].out_features == n_outputs:
        return None
    name, old = last
    new = nn.Linear(
        old.in_features,
        n_outputs,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)
    return name


def freeze(module: nn.Module, names: Iterable[str]) -> None:
    """Stop gradient updates of the named parameters (``requires_grad=False``)."""
    params = dict(module.named_parameters())
    for name in names:
        freeze_parameter(params[name])
