"""Fine-tuning beyond freezing: L2-SP, discriminative learning rates, unfreezing.

Each plugs into skorch where skorch expects it, so skorch's one training loop
runs them: the L2-SP penalty into the net's ``get_loss``, the learning rates
into the optimizer's parameter groups, the unfreezing schedule into a
callback. The estimators decide when to use them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

import torch
from skorch.callbacks import Callback

from . import _layers


class L2SPLoss:
    """The net's ``get_loss`` plus the L2-SP penalty while training.

    ``alpha / 2 * sum ||w - w_source||^2`` over the shared parameters that are
    trainable at the time (frozen ones do not move, so they add nothing) and
    ``beta / 2 * sum ||w||^2`` over the head's trainable parameters, as in
    Li et al., "Explicit inductive bias for transfer learning with
    convolutional networks" (ICML 2018). A shared parameter's source weights
    are copied once, on its device: when the loss is made for one trainable
    then, when it first trains for one frozen then (unchanged until it
    unfreezes), so that a frozen backbone is never copied.
    """

    def __init__(self, net, shared, head, alpha, beta):
        self.get_loss = net.get_loss  # the current one: wrappers compose
        self.shared = list(shared)
        self.source = {}
        self._copy_trainable_sources()
        self.head = list(head)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def _copy_trainable_sources(self):
        for i, param in enumerate(self.shared):
            if param.requires_grad and i not in self.source:
                self.source[i] = param.detach().clone()

    def penalty(self):
        """Return the penalty for the current weights, a scalar tensor."""
        total = 0.0
        if self.alpha:
            self._copy_trainable_sources()
            drift = [
                (param - self.source[i]).pow(2).sum()
                for i, param in enumerate(self.shared)
                if param.requires_grad
            ]
            if drift:
                total = total + self.alpha / 2 * torch.stack(drift).sum()
        if self.beta:
            size = [param.pow(2).sum() for param in self.head if param.requires_grad]
            if size:
                total = total + self.beta / 2 * torch.stack(size).sum()
        return total

    def __call__(self, y_pred, y_true, X=None, training=False):
        loss = self.get_loss(y_pred, y_true, X=X, training=training)
        if training:
            loss = loss + self.penalty()
        return loss


@contextmanager
def l2sp_penalty(net, shared, head, alpha, beta):
    """Add the L2-SP penalty to ``net``'s training loss inside the block.

    ``shared`` and ``head`` are parameters of ``net.module_``; their values
    now are the source weights the penalty pulls the shared ones toward.
    Nothing changes when ``alpha`` and ``beta`` are both zero.
    """
    if not alpha and not beta:
        yield
        return
    had = "get_loss" in vars(net)
    previous = vars(net).get("get_loss")
    net.get_loss = L2SPLoss(net, shared, head, alpha, beta)
    try:
        yield
    finally:
        if had:
            net.get_loss = previous
        else:
            del net.get_loss


def initialize_scaled_optimizer(net, shared, scale):
    """Initialise ``net.optimizer_`` with the ``shared`` parameters' lr scaled.

    The parameter groups are skorch's own (``optimizer__param_groups`` and the
    rest); each is split into its shared parameters, which train with the
    group's learning rate times ``scale``, and the others, which keep it.
    """
    if scale == 1.0:
        net.initialize_optimizer()
        return
    named = list(net.get_all_learnable_params())
    (pgroups,), kwargs = net.get_params_for_optimizer("optimizer", named)
    shared_ids = {id(param) for param in shared}
    groups = []
    for group in pgroups:
        options = {key: value for key, value in group.items() if key != "params"}
        params = group["params"]
        others = [p for p in params if id(p) not in shared_ids]
        scaled = [p for p in params if id(p) in shared_ids]
        if others:
            groups.append({**options, "params": others})
        if scaled:
            lr = options.get("lr", kwargs["lr"]) * scale
            groups.append({**options, "params": scaled, "lr": lr})
    net.optimizer_ = net.optimizer(groups, **kwargs)


def check_schedule(unfreeze, module):
    """Validate ``unfreeze`` against ``module``; return ``((epoch, names), ...)``.

    Raises
    ------
    ValueError
        When it is not a sequence of ``(epoch, patterns)`` pairs with a
        positive int epoch, or a pattern matches no parameter.
    """
    if unfreeze is None:
        return ()
    example = "e.g. unfreeze=((3, 'features.2.*'), (6, 'features.*'))"
    if isinstance(unfreeze, str) or not isinstance(unfreeze, Sequence):
        msg = (
            f"unfreeze must be None or a sequence of (epoch, patterns) pairs, "
            f"{example}; got {unfreeze!r}."
        )
        raise ValueError(msg)
    schedule = []
    for step in unfreeze:
        if isinstance(step, str) or not isinstance(step, Sequence) or len(step) != 2:
            msg = (
                f"Each step of unfreeze must be an (epoch, patterns) pair, "
                f"{example}; got {step!r}."
            )
            raise ValueError(msg)
        epoch, patterns = step
        if (
            isinstance(epoch, bool)
            or not isinstance(epoch, numbers.Integral)
            or epoch < 1
        ):
            msg = (
                f"The epoch of each unfreeze step must be a positive int (the "
                f"first epoch is 1); got {epoch!r} in {tuple(step)!r}."
            )
            raise ValueError(msg)
        patterns = _layers.check_patterns(patterns, "unfreeze")
        if not patterns:
            msg = (
                f"The unfreeze step {tuple(step)!r} names no pattern; give one or "
                "more glob patterns over parameter names."
            )
            raise ValueError(msg)
        names = _layers.match_parameters(module, patterns, param="unfreeze")
        schedule.append((int(epoch), tuple(names)))
    return tuple(schedule)


class Unfreeze(Callback):
    """skorch callback: make parameters trainable at the start of given epochs.

    Parameters
    ----------
    schedule : tuple of (int, tuple of str)
        Epochs (from 1, counted in the net's history) and the names of the
        parameters that become trainable when that epoch begins.
    module : torch.nn.Module
        The network the names refer to (not pickled: after unpickling, the
        net's ``module_``). BatchNorm layers held in evaluation mode while
        frozen train again once a parameter of theirs unfreezes.

    ``fit`` adds it to the net's callbacks for its own training and removes it
    when it ends, with the ``requires_grad`` flags it set. It is safe with the
    frozen-stage cache (``_sktransfer_cache_safe``): it holds the whole
    module, and a stage that it unfreezes is not cached.
    """

    _sktransfer_cache_safe = True

    def __init__(self, schedule, module):
        self.schedule = schedule
        self.module = module

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history)
        names = [name for at, step in self.schedule if at == epoch for name in step]
        if not names:
            return
        module = net.module_ if self.module is None else self.module
        params = dict(module.named_parameters())
        for name in names:
            params[name].requires_grad_(True)
        _layers.release_norm_layers(module)

    def __getstate__(self):
        # The module is the net's own ``module_``, which skorch pickles (moving
        # GPU weights to the CPU where CUDA is missing); a copy pickled here
        # would be a second, detached network, and one that needs CUDA to load.
        state = dict(self.__dict__)
        state["module"] = None
        return state


def autocast(dtype, device):
    """Return the context that fine-tuning runs in: bfloat16 autocast, or nothing.

    Under autocast, matrix products and convolutions run in bfloat16 while the
    weights, their gradients and the optimizer stay in float32; losses and
    reductions run in float32. bfloat16 has float32's range, so it needs no
    loss scaling.
    """
    if dtype is None:
        return nullcontext()
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        msg = (
            f"autocast={dtype!r}, but this GPU does not support bfloat16; set "
            "autocast=None."
        )
        raise ValueError(msg)
    # No cache of cast weights: it lives as long as the context, here the whole
    # training loop, and would keep feeding the first batch's weights forward.
    return torch.autocast(
        device_type=device_type, dtype=torch.bfloat16, cache_enabled=False
    )
