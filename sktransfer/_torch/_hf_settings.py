"""Checks of a :class:`~sktransfer.HuggingFaceNet`'s settings, and checkpointing.

:func:`check_spec` validates the spec's values when a network is built (at
``fit``, before anything changes). :func:`enable_checkpointing` turns on
``transformers``' own gradient checkpointing of a model (Chen et al., 2016):
each transformer block keeps only its input in the forward pass and computes
its activations again in the backward pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def check_spec(spec, pooling_options):
    """Raise a ValueError for a bad setting of ``spec`` (a HuggingFaceNet)."""
    if spec.pooling not in pooling_options:
        msg = f"pooling must be one of {pooling_options}; got {spec.pooling!r}."
        raise ValueError(msg)
    if spec.max_length is not None and (
        not isinstance(spec.max_length, int) or spec.max_length < 2
    ):
        msg = (
            "max_length must be an int of at least 2 (room for the special "
            f"tokens) or None; got {spec.max_length!r}."
        )
        raise ValueError(msg)
    optimizer = spec.optimizer
    if optimizer is not None and not (
        isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)
    ):
        msg = (
            "optimizer must be a torch.optim.Optimizer subclass (e.g. "
            f"torch.optim.SGD) or None for AdamW; got {optimizer!r}."
        )
        raise ValueError(msg)
    params = spec.optimizer_params
    if params is not None and not isinstance(params, dict):
        msg = f"optimizer_params must be a dict or None; got {params!r}."
        raise ValueError(msg)
    taken = sorted({"lr", "params", "param_groups"} & set(params or {}))
    if taken:
        msg = (
            f"optimizer_params may not set {taken}: the learning rate is the "
            "estimator's lr (with shared_lr_scale and layer_decay), and the "
            "parameters are the network's. Set lr on the estimator."
        )
        raise ValueError(msg)
    checkpointing = spec.gradient_checkpointing
    if not isinstance(checkpointing, (bool, np.bool_)):
        msg = f"gradient_checkpointing must be True or False; got {checkpointing!r}."
        raise ValueError(msg)


def _refusal(model):
    return (
        "gradient_checkpointing=True uses transformers' own gradient "
        "checkpointing, which it accepts for a transformers model whose class "
        "supports it (supports_gradient_checkpointing=True, e.g. BertModel, "
        f"RobertaModel); {type(model).__name__} does not"
    )


def refuse_own_network(model):
    """Raise the ValueError for checkpointing a network of one's own (TokenNet)."""
    msg = (
        f"{_refusal(model)}: it is a network of one's own, given with "
        "tokenizer=. Set gradient_checkpointing=False, or checkpoint inside its "
        "forward (torch.utils.checkpoint.checkpoint)."
    )
    raise ValueError(msg)


def enable_checkpointing(model: nn.Module) -> None:
    """Turn on ``transformers``' gradient checkpointing of ``model``, non-reentrant.

    The model's own method (``activation_checkpointing_enable``, called
    ``gradient_checkpointing_enable`` in older ``transformers``; recent ones
    deprecate that name with a FutureWarning) with ``use_reentrant=False``:
    PyTorch's non-reentrant :func:`torch.utils.checkpoint.checkpoint`
    computes the gradients of the parameters in a block whether or not its
    input requires gradients (a frozen embedding layer, LoRA adapters from
    ``peft``) and restores the random state, so dropout masks are the same
    when a block is recomputed.
    Checkpointing acts only in training mode with gradients enabled:
    prediction and a frozen part's forward pass (in evaluation mode) are
    unchanged.

    Raises
    ------
    ValueError
        If the model's class does not support gradient checkpointing
        (``supports_gradient_checkpointing = False``).
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        msg = f"{_refusal(model)}. Set gradient_checkpointing=False."
        raise ValueError(msg)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # transformers also hooks the input embeddings so that their output
    # requires gradients, which only reentrant checkpointing needs; the hook is
    # a local function, so a fitted estimator holding it could not be pickled.
    model.disable_input_require_grads()
    # A decoder's key/value cache, which an encoder classifying texts never
    # uses, cannot be kept under checkpointing: without this, transformers
    # logs that it turns the cache off (the Trainer's users set the same).
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False
