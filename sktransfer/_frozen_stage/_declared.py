"""The cut a network declares: ``forward_features`` and ``forward_head``, as timm's."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .._torch._held import is_held
from .._torch._probe import modes_restored
from ._stage import FrozenStage
from ._verify import mode_problem, probe_split


def declares_cut(module):
    """Whether ``module`` declares its cut: ``forward_features`` and ``forward_head``.

    As timm's models do: ``forward_features(x)`` returns the head's input and
    ``forward_head(features)`` the network's output, so that ``forward(x)``
    equals ``forward_head(forward_features(x))``.
    """
    return all(
        callable(getattr(module, name, None))
        for name in ("forward_features", "forward_head")
    )


class DeclaredPart(nn.Module):
    """One side of a declared cut: ``forward_features`` or ``forward_head``.

    Runs that method of ``owner``, and holds the owner's top-level submodules
    (and direct parameters and buffers) of that side under their own names,
    so that its parameters, state dict and training modes are theirs. The
    owner itself is kept outside the module tree. The head's side also sets
    the owner's own ``training`` flag, which a ``forward_head`` may read.
    """

    def __init__(self, owner, method, modules=(), parameters=(), buffers=()):
        super().__init__()
        self.__dict__["owner"] = owner
        self.method = method
        for name in modules:
            self._modules[name] = owner._modules[name]
        for name in parameters:
            self._parameters[name] = owner._parameters[name]
        for name in buffers:
            self._buffers[name] = owner._buffers[name]

    def forward(self, x):
        return getattr(self.__dict__["owner"], self.method)(x)

    def train(self, mode=True):
        super().train(mode)
        if self.method == "forward_head":
            self.__dict__["owner"].training = mode
        return self


@contextmanager
def _calls(children):
    """Record the names of the ``children`` (name to module) called inside."""
    called = []
    handles = [
        child.register_forward_pre_hook(lambda *_, name=name: called.append(name))
        for name, child in children.items()
    ]
    try:
        yield called
    finally:
        for handle in handles:
            handle.remove()


def declared_stage(module, probe):
    """Split ``module`` at the cut it declares (:func:`declares_cut`), if safe.

    The stage is ``forward_features``: every parameter it reads must be frozen
    (no gradient reaches one from its output), the layers of the top-level
    submodules it calls must not be random or use batch statistics while the
    network trains (frozen parts held in evaluation mode), and no top-level
    submodule may serve ``forward_head`` too. :func:`probe_split` then confirms it
    as for a traced stage. Returns the :class:`FrozenStage` (or None) and why
    not.
    """
    name = type(module).__name__
    children = dict(module.named_children())
    with modes_restored(module), torch.random.fork_rng():
        module.eval()
        try:
            with _calls(children) as features_calls, torch.enable_grad():
                features = module.forward_features(probe)
        except NotImplementedError as exc:
            return None, f"{name}.forward_features is not implemented ({exc})"
        except Exception as exc:  # noqa: BLE001 (a failing probe only means: no cache)
            return None, (
                f"forward_features fails on a probe batch ({type(exc).__name__}: {exc})"
            )
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            return None, "forward_features does not return one floating-point tensor"
        if features.requires_grad:
            trainable = [
                (n, p) for n, p in module.named_parameters() if p.requires_grad
            ]
            grads = torch.autograd.grad(
                features.sum(), [p for _, p in trainable], allow_unused=True
            )
            pairs = zip(trainable, grads, strict=True)
            used = [n for (n, _), grad in pairs if grad is not None]
            what = f"the trainable parameter {used[0]}" if used else "a trainable value"
            return None, f"forward_features reads {what}"
        try:
            with _calls(children) as head_calls, torch.no_grad():
                module.forward_head(features.detach())
        except Exception as exc:  # noqa: BLE001
            return None, (
                f"forward_head fails on forward_features' output "
                f"({type(exc).__name__}: {exc})"
            )
        shared = [n for n in children if n in features_calls and n in head_calls]
        if shared:
            return None, f"forward_features and forward_head both call {shared[0]}"
        module.train()  # the modes fine-tuning runs the stage in
        for child in dict.fromkeys(features_calls):
            for sub_name, sub in children[child].named_modules(prefix=child):
                if sub.training and not is_held(sub):
                    why = mode_problem(sub_name, sub)
                    if why is not None:
                        return None, why
    stage_modules = [n for n in children if n in features_calls]
    direct = module._parameters
    stage = DeclaredPart(
        module,
        "forward_features",
        stage_modules,
        [n for n, p in direct.items() if p is not None and not p.requires_grad],
        [n for n, b in module._buffers.items() if b is not None],
    )
    rest = DeclaredPart(
        module,
        "forward_head",
        [n for n in children if n not in stage_modules],
        [n for n, p in direct.items() if p is not None and p.requires_grad],
    )
    why, out = probe_split(module, stage, rest, probe)
    if why is not None:
        return None, why
    return FrozenStage(
        stage, rest, "forward_features", tuple(out.shape[1:]), out.dtype
    ), None
