"""Merging LoRA adapters into their layers: a plain module, no peft layer.

The merged layer computes ``W + (alpha / r) B A`` (Hu et al., *LoRA:
Low-Rank Adaptation of Large Language Models*, ICLR 2022) with peft's own
``merge(safe_merge=True)``, except for a grouped ``nn.Conv2d``, which peft
cannot merge (its update is not grouped) and which becomes an ungrouped
``nn.Conv2d`` here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._lora import adapted_layers

__all__ = ["merged"]


def _merged_layer(name, layer):
    """Return the plain layer computing what the adapted ``layer`` does (eval)."""
    base = layer.get_base_layer()
    plain_lora = hasattr(layer, "lora_A") and not any(
        getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).values()
    )
    if isinstance(base, nn.Conv2d) and base.groups > 1 and plain_lora:
        return _merged_grouped_conv(layer, base)
    merged = copy.deepcopy(layer)
    try:
        merged.merge(safe_merge=True)
    except (NotImplementedError, ValueError) as exc:
        msg = (
            f"Cannot merge the adapter of {name!r} ({type(base).__name__}): "
            f"{exc} merge() merges LoRA on nn.Linear, nn.Conv2d and grouped "
            "nn.Conv2d; use the adapted network net_.module_ as it is."
        )
        raise ValueError(msg) from exc
    return merged.get_base_layer()


def _merged_grouped_conv(layer, base):
    """Return a grouped Conv2d with LoRA as one ungrouped Conv2d (peft cannot).

    peft's factors for a grouped convolution are an ungrouped ``lora_A``
    (``in -> r``, the base's kernel) and a grouped 1x1 ``lora_B``
    (``r -> out``): their product is a full ``(out, in, k, k)`` update, so the
    merged layer is ungrouped, with the base's weight block-diagonal in it.
    """
    groups, out_ch, in_ch = base.groups, base.out_channels, base.in_channels
    weight = base.weight.detach()
    kernel = weight.shape[2:]
    full = weight.new_zeros((out_ch, in_ch, *kernel))
    step_out, step_in = out_ch // groups, in_ch // groups
    for g in range(groups):
        full[g * step_out : (g + 1) * step_out, g * step_in : (g + 1) * step_in] = (
            weight[g * step_out : (g + 1) * step_out]
        )
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        a = layer.lora_A[adapter].weight.detach()  # (r, in, *k)
        b = layer.lora_B[adapter].weight.detach()  # (out, r / groups, 1, 1)
        r = a.shape[0]
        a_g = a.reshape(groups, r // groups, -1)
        b_g = b.reshape(groups, step_out, r // groups)
        delta = torch.bmm(b_g, a_g).reshape(out_ch, in_ch, *kernel)
        full = full + delta * layer.scaling[adapter]
        bias = layer.lora_B[adapter].bias
        if bias is not None:
            msg = (
                "merging a grouped Conv2d adapter with lora_bias=True is not supported"
            )
            raise ValueError(msg)
    merged = nn.Conv2d(
        in_ch,
        out_ch,
        base.kernel_size,
        stride=base.stride,
        padding=base.padding,
        dilation=base.dilation,
        groups=1,
        bias=base.bias is not None,
        padding_mode=base.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        merged.weight.copy_(full)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    merged.train(base.training)
    return merged


def merged(module):
    """Return a copy of ``module`` with every adapter merged into its layer.

    The copy holds plain torch layers only (no peft layer) and computes, in
    evaluation mode, what the adapted ``module`` computes. ``module`` is not
    changed.
    """
    plain = copy.deepcopy(module)
    for name in adapted_layers(plain):
        layer = plain.get_submodule(name)
        parent, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent), child, _merged_layer(name, layer))
    return plain
