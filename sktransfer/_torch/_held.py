"""Frozen layers held in evaluation mode while fine-tuning (feature extraction)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager

from torch import nn

from ._layers import is_under


def _hold_eval(norm: nn.Module, args: tuple) -> None:
    """Forward pre-hook: run a frozen layer in evaluation mode."""
    if norm.training:
        norm.train(False)


def is_held(layer: nn.Module) -> bool:
    """Whether :func:`hold_frozen_layers` holds ``layer`` in evaluation mode."""
    return _hold_eval in layer._forward_pre_hooks.values()


def hold_frozen_layers(
    module: nn.Module, frozen: Iterable[str], layers: Sequence[str] = ()
) -> list[str]:
    """Run every fully frozen layer in evaluation mode: frozen means feature extraction.

    As the Keras transfer-learning guide calls ``base_model(x, training=False)``,
    and as timm's ``forward_features`` and Hugging Face feature extraction run
    a backbone: a frozen block computes the same while fine-tuning as while
    predicting, with dropout and stochastic depth off and its normalisation
    layers on their running statistics. Every submodule whose parameters are
    all in ``frozen`` gets a forward pre-hook that switches it to evaluation
    mode (skorch puts the whole network in training mode before every batch,
    where a BatchNorm layer would normalise with batch statistics and update
    its running mean and variance even with its affine parameters frozen),
    and so does every submodule without
    parameters whose nearest enclosing module with parameters is frozen (never
    when that is the whole network, which holds the trainable head): a dropout
    between the frozen body and the head stays in training mode, with the
    trained part. :func:`release_norm_layers` with ``every=True`` removes the
    hooks.

    Parameters
    ----------
    module : torch.nn.Module
        The network; hooks are registered in place.
    frozen : iterable of str
        Names of the frozen parameters.
    layers : sequence of str, default=()
        Submodules named by ``frozen`` patterns (:func:`match_layers`): held
        with everything inside them, even without parameters (a
        parameter-free normalisation layer at the top of the network).

    Returns
    -------
    names : list of str
        The outermost held submodules (their own submodules are held too).
    """
    frozen = set(frozen)
    all_params = [name for name, _ in module.named_parameters()]
    held = []
    for name, sub in module.named_modules():
        if not name or not (
            is_under(name, layers) or _all_frozen(module, name, sub, frozen, all_params)
        ):
            continue
        if not is_held(sub):
            sub.register_forward_pre_hook(_hold_eval)
        if not any(is_under(name, [outer]) for outer in held):
            held.append(name)
    return held


@contextmanager
def unheld(module: nn.Module):
    """Lift every hold of :func:`hold_frozen_layers` in ``module`` inside the block.

    For AdaBN, which must run every normalisation layer, frozen or not, in
    training mode; the holds are put back after, whatever happens inside.
    """
    lifted = []
    for sub in module.modules():
        hooks = sub._forward_pre_hooks
        for key in [k for k, hook in hooks.items() if hook is _hold_eval]:
            lifted.append((hooks, key))
            del hooks[key]
    try:
        yield
    finally:
        for hooks, key in lifted:
            hooks[key] = _hold_eval


def release_norm_layers(module: nn.Module, *, every: bool = False) -> list[str]:
    """Let held normalisation layers train again.

    The inverse of :func:`hold_frozen_layers`. By default, after
    parameters were unfrozen: a held layer whose parameters (or, without any,
    whose enclosing block's parameters) are no longer all frozen
    (``requires_grad=False``) loses its hook. With ``every=True``, every held
    layer does (the end of ``fit``). A released layer follows the network's
    mode again.

    Parameters
    ----------
    module : torch.nn.Module
        The network; hooks are removed in place.
    every : bool, default=False
        Release every held layer, frozen or not.

    Returns
    -------
    names : list of str
        The layers released.
    """
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    all_params = [name for name, _ in module.named_parameters()]
    released = []
    for name, sub in module.named_modules():
        if not is_held(sub):
            continue
        params = _governing_params(module, name, sub, all_params)
        # A layer that no parameter governs was held by name: until fit ends.
        if every or (params and not all(p in frozen for p in params)):
            hooks = sub._forward_pre_hooks
            for key in [k for k, hook in hooks.items() if hook is _hold_eval]:
                del hooks[key]
            sub.train(module.training)
            released.append(name)
    return released


def _governing_params(module, name, layer, all_params):
    """Return the parameters whose being frozen makes a normalisation layer frozen.

    Its own; without any, those of its nearest enclosing block that has
    some; none for a parameter-free layer outside any such block (at the top
    of the network), which only a ``frozen`` pattern naming it holds.
    """
    prefix = f"{name}." if name else ""
    params = [prefix + p for p, _ in layer.named_parameters()]
    parent = name
    while not params and parent:
        # No parameters: judge by the nearest enclosing block that has some.
        parent = parent.rpartition(".")[0]
        if parent and any(True for _ in module.get_submodule(parent).parameters()):
            params = [p for p in all_params if is_under(p, [parent])]
    return params


def _all_frozen(module, name, layer, frozen, all_params):
    """Whether a layer counts as frozen: its governing parameters all are."""
    params = _governing_params(module, name, layer, all_params)
    return bool(params) and all(p in frozen for p in params)


def eval_frozen(module):
    """Put each largest submodule whose parameters are all frozen in eval mode."""
    params = list(module.parameters())
    if params and not any(param.requires_grad for param in params):
        module.eval()
        return
    for child in module.children():
        eval_frozen(child)
