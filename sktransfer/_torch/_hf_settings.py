"""Checks of a :class:`~sktransfer.HuggingFaceNet`'s settings, and checkpointing.

:func:`check_spec` validates the spec's values when a network is built (at
``fit``, before anything changes). :func:`enable_checkpointing` turns on
``transformers``' own gradient checkpointing of a model (Chen et al., 2016):
each transformer block keeps only its input in the forward pass and computes
its activations again in the backward pass.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn


def check_spec(spec, pooling_options):
    """Raise a ValueError for a bad setting of ``spec`` (a HuggingFaceNet)."""
    if spec.pooling not in pooling_options:
        msg = f"pooling must be one of {pooling_options}; got {spec.pooling!r}."
        raise ValueError(msg)
    check_max_length(spec.max_length)
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


def check_max_length(max_length, tokenizer=None):
    """Raise a ValueError unless ``max_length`` is None or an int with room for text.

    Parameters
    ----------
    max_length : object
        :class:`~sktransfer.HuggingFaceNet`'s ``max_length``.
    tokenizer : transformers.PreTrainedTokenizerBase or None, default=None
        When given, ``max_length`` must hold its special tokens
        (``num_special_tokens_to_add()``: 2 for BERT's ``[CLS]`` and
        ``[SEP]``) and one token of text; without it, at least 1.

    Raises
    ------
    ValueError
        For a bool, a non-integer (``2.5``, ``"16"``) or an int too small,
        naming the value and the least accepted.
    """
    if max_length is None:
        return
    count = getattr(tokenizer, "num_special_tokens_to_add", None)
    special = int(count()) if callable(count) else 0
    least = special + 1
    if (
        isinstance(max_length, (bool, np.bool_))
        or not isinstance(max_length, numbers.Integral)
        or max_length < least
    ):
        room = (
            f"the tokenizer's {special} special token(s) and at least one token of text"
            if special
            else "at least one token"
        )
        msg = (
            f"max_length must be None (the model's default) or an int of at least "
            f"{least} (room for {room}); got {max_length!r}"
            + (
                f" of type {type(max_length).__name__}"
                if isinstance(max_length, str)
                else ""
            )
            + "."
        )
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
