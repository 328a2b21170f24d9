"""Fine-tuning beyond freezing: L2-SP, discriminative learning rates, unfreezing.

Each plugs into skorch where skorch expects it, so skorch's one training loop
runs them: the L2-SP penalty into the net's ``get_loss``, the learning rates
into the optimizer's parameter groups, the unfreezing schedule into a
callback. The estimators decide when to use them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from skorch.callbacks import Callback

from .._compat import _NormBase
from .._torch import _held, _layers, _lora
from . import _frozen

# The name of the unfreezing schedule's callback in the fine-tuning net.
UNFREEZE_CALLBACK = "sktransfer_unfreeze"


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
        self.net = net
        # The net's current get_loss, so that wrappers compose (sample weights).
        self.get_loss = net.get_loss
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
    _frozen.wrap_get_loss(net, L2SPLoss(net, shared, head, alpha, beta))
    yield


# Normalisation layers take the depth of the layer before them.
_NORM_LAYERS = (
    _NormBase,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
)


def layer_depths(module, head):
    """Return each shared parameter's depth below the head, by ``id``.

    The layers are the submodules that hold parameters themselves, in the
    order of ``module.named_parameters()``; a normalisation layer (BatchNorm,
    LayerNorm, GroupNorm, InstanceNorm) belongs to the layer before it. The
    last shared layer has depth 1, the one before it 2, and so on; the head's
    parameters have depth 0 and are not returned.
    """
    if callable(getattr(module, "block_depths", None)):  # transformers: _hf.py
        return module.block_depths(head)
    layers = []  # lists of parameters, first layer first
    owners = {}
    for name, param in module.named_parameters():
        if _layers.is_under(name, head):
            continue
        owner_name = _lora.layer_of(name.rpartition(".")[0])  # adapters: their layer's
        owner = module.get_submodule(owner_name)
        if owner_name not in owners:
            merge = isinstance(owner, _NORM_LAYERS) and layers
            owners[owner_name] = len(layers) - 1 if merge else len(layers)
            if not merge:
                layers.append([])
        layers[owners[owner_name]].append(param)
    return {
        id(param): len(layers) - i
        for i, params in enumerate(layers)
        for param in params
    }


def initialize_scaled_optimizer(net, shared, scale, *, decay=1.0, head=()):
    """Initialise ``net.optimizer_`` with the ``shared`` parameters' lr scaled.

    The parameter groups are skorch's own (``optimizer__param_groups`` and the
    rest); each is split by learning-rate factor: the head's parameters keep
    the group's learning rate, a shared parameter at depth ``d`` below the
    head (:func:`layer_depths`) trains with it times ``scale * decay ** d``,
    as timm's ``param_groups_layer_decay`` does (Clark et al., ELECTRA, ICLR
    2020). The head's group comes first, then one group per factor, in
    the order of the layers. ``scale=1`` and ``decay=1`` are skorch's
    optimizer, unchanged.
    """
    if scale == 1.0 and decay == 1.0:
        net.initialize_optimizer()
        return
    depths = layer_depths(net.module_, head) if decay != 1.0 else {}
    factors = {id(param): scale * decay ** depths.get(id(param), 0) for param in shared}
    named = list(net.get_all_learnable_params())
    (pgroups,), kwargs = net.get_params_for_optimizer("optimizer", named)
    groups = []
    for group in pgroups:
        options = {key: value for key, value in group.items() if key != "params"}
        by_factor = {1.0: []}
        for param in group["params"]:
            by_factor.setdefault(factors.get(id(param), 1.0), []).append(param)
        for factor, params in by_factor.items():
            if not params:
                continue
            if factor == 1.0:
                groups.append({**options, "params": params})
            else:
                lr = options.get("lr", kwargs["lr"]) * factor
                groups.append({**options, "params": params, "lr": lr})
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
    when it ends, with the ``requires_grad`` flags it set. It declares itself
    safe (``sktransfer_safe``): it holds the whole module, a stage that it
    unfreezes is not cached, and it acts when an epoch begins, before skorch
    puts the modules in training mode, never between two batches.
    """

    sktransfer_safe = True

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
        _held.release_norm_layers(module)

    def __getstate__(self):
        # The module is the net's own ``module_``, which skorch pickles (moving
        # GPU weights to the CPU where CUDA is missing); a copy pickled here
        # would be a second, detached network, and one that needs CUDA to load.
        state = dict(self.__dict__)
        state["module"] = None
        return state


@contextmanager
def autocast(dtype, device, net=None):
    """Run fine-tuning in bfloat16 autocast, or as it is (``dtype=None``).

    Under autocast, matrix products and convolutions run in bfloat16 while the
    weights, their gradients and the optimizer stay in float32; losses and
    reductions run in float32. bfloat16 has float32's range, so it needs no
    loss scaling. The net's outputs (skorch's ``infer``, which training,
    validation and the scoring callbacks call) are cast back to float32, as
    the weights are, so that a validation score such as ``valid_acc`` reads
    them (NumPy has no bfloat16); the cast lasts for the context only.
    """
    if dtype is None:
        yield
        return
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        msg = (
            f"autocast={dtype!r}, but this GPU does not support bfloat16; set "
            "autocast=None."
        )
        raise ValueError(msg)
    own = None if net is None else vars(net).get("infer")  # the user's, if set
    if net is not None:
        infer = net.infer

        def infer_in_float32(x, **fit_params):
            return _float32(infer(x, **fit_params))

        net.infer = infer_in_float32
    try:
        # No cache of cast weights: it lives as long as the context, here the
        # whole training loop, and would keep feeding the first batch's
        # weights forward.
        with torch.autocast(
            device_type=device_type, dtype=torch.bfloat16, cache_enabled=False
        ):
            yield
    finally:
        if net is not None:
            del net.infer  # the class's method again
            if own is not None:
                net.infer = own  # or the instance's own, as it was


def _float32(out):
    """Cast bfloat16 tensors (in tuples, lists and dicts too) to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == torch.bfloat16 else out
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out)
    if isinstance(out, dict):
        return {key: _float32(value) for key, value in out.items()}
    return out
