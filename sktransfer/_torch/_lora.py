"""Parameter-efficient fine-tuning: low-rank adapters on the shared layers.

The estimators' ``adapter`` parameter puts adapters (LoRA, Hu et al., ICLR
2022, through Hugging Face ``peft``) on the shared layers of the network that
``fit`` builds for the target task. The pretrained weights stay fixed, each
adapted layer learns a low-rank update, and the head is trained in full.

The adapters are injected into the network in place
(``peft.inject_adapter_in_model``): the module keeps its structure and its
submodule names, so heads, ``frozen`` patterns, the frozen-stage cache and the
optimizer's parameter groups work on it as on any network. An adapted layer
``body.0`` becomes a ``peft`` layer holding the pretrained layer as
``body.0.base_layer`` and the low-rank factors as ``body.0.lora_A.default``
and ``body.0.lora_B.default``; ``lora_B`` starts at zero, so the adapted
network computes what the pretrained one does until the first step.

``peft`` is imported only when an adapter is used. Merging the adapters
into their layers is :mod:`sktransfer._torch._lora_merge`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import warnings
from fnmatch import fnmatchcase

from torch import nn

from .._compat import _NormBase
from . import _layers
from ._lora_settings import check_groups, warn_ignored

__all__ = [
    "adapted_layers",
    "apply",
    "is_adapter_layer",
]

# The layer kinds that peft's LoRA adapts (transformers' GPT-2 Conv1D too).
_LORA_KINDS = (
    nn.Linear,
    nn.Embedding,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.MultiheadAttention,
)
_LORA_KIND_NAMES = (
    "nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, "
    "nn.MultiheadAttention (and transformers' Conv1D)"
)
# What adapter="lora" adapts when lora_targets is None.
_DEFAULT_KINDS = (nn.Linear, nn.Conv2d)

# The name of the adapter inside each peft layer.
_ADAPTER_NAME = "default"


def _peft():
    """Import peft, or raise an ImportError saying how to install it."""
    try:
        import peft
    except ImportError as exc:
        msg = (
            "adapter needs the peft package (Hugging Face PEFT): "
            'pip install ".[peft]" from a clone of sktransfer, or '
            'pip install "peft>=0.10".'
        )
        raise ImportError(msg) from exc
    return peft


def is_adapter_layer(layer: nn.Module) -> bool:
    """Whether ``layer`` is a layer that peft injected (it holds an adapter).

    Never imports peft: a network without adapters has none.
    """
    if "peft" not in sys.modules:
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(layer, BaseTunerLayer)


def _adapter_param(name: str) -> bool:
    """Whether the parameter or buffer ``name`` belongs to an adapter."""
    return any(
        part.startswith(("lora_", "hada_", "lokr_", "ia3_")) for part in name.split(".")
    )


def _base_name(name: str) -> str:
    """Return the name a state entry of an adapted network has in the base."""
    return name.replace(".base_layer.", ".").replace(".base_layer", "")


_INSIDE_ADAPTED = re.compile(
    r"\.(?:base_layer|(?:lora|hada|lokr|ia3)_\w+(?:\.[^.]+)?)$"
)


def layer_of(name: str) -> str:
    """Return the adapted layer of a submodule name (``x.lora_A.default``: ``x``)."""
    return _INSIDE_ADAPTED.sub("", name)


def adapted_layers(module: nn.Module) -> list[str]:
    """Return the names of the layers of ``module`` that hold an adapter."""
    return [name for name, layer in module.named_modules() if is_adapter_layer(layer)]


# ---------------------------------------------------------------- targets


def _frozen_layers(module, frozen):
    """Names of the layers all of whose own parameters are in ``frozen``."""
    frozen = set(frozen)
    names = []
    for name, layer in module.named_modules():
        own = [
            f"{name}.{p}" if name else p
            for p, _ in layer.named_parameters(recurse=False)
        ]
        if own and all(p in frozen for p in own):
            names.append(name)
    return names


def _holds_weights(layer):
    return any(True for _ in layer.parameters(recurse=False)) or isinstance(
        layer, nn.MultiheadAttention
    )


def _adaptable(layer):
    return isinstance(layer, _LORA_KINDS) or type(layer).__name__ == "Conv1D"


def resolve_targets(module, targets, head, frozen):
    """Return the names of the layers that get an adapter.

    Parameters
    ----------
    module : torch.nn.Module
        The network, its head rebuilt.
    targets : str, sequence of str or None
        The estimator's ``lora_targets``: glob patterns over submodule names
        (``fnmatch``, ``*`` also matches dots). None: every ``nn.Linear`` and
        ``nn.Conv2d`` of the shared layers that ``frozen`` does not hold and
        the output reads (a language model's pooler is not, under mean or
        first-token pooling).
    head : sequence of str
        The head's submodule names: never adapted (the head trains in full).
    frozen : list of str
        The frozen parameters: their layers get no adapter.

    Returns
    -------
    names : list of str
        Layer names, in module order.

    Raises
    ------
    ValueError
        If a pattern matches no layer that holds weights, or a layer of a kind
        peft cannot adapt (the message names the layer and the kinds it can),
        a layer of the head or a frozen layer; or if there is nothing to adapt.
    """
    held = set(_frozen_layers(module, frozen))
    layers = {
        name: layer
        for name, layer in module.named_modules()
        if name and _holds_weights(layer)
    }
    shared = {
        name: layer
        for name, layer in layers.items()
        if not _layers.is_under(name, head)
    }
    if targets is None:  # (not a layer no output reads, as a base model's pooler)
        unread = getattr(module, "unread", ())
        names = [
            name
            for name, layer in shared.items()
            if isinstance(layer, _DEFAULT_KINDS)
            and name not in held
            and not _layers.is_under(name, unread)
        ]
        if not names:
            others = [
                f"{name} ({type(layer).__name__})"
                for name, layer in shared.items()
                if name not in held and not isinstance(layer, _NormBase | nn.LayerNorm)
            ]
            msg = (
                "adapter found no nn.Linear or nn.Conv2d layer to adapt among the "
                f"shared layers of {type(module).__name__} (outside the head "
                f"{list(head)} and the frozen layers)"
                + (f"; it has {', '.join(others)}" if others else "")
                + f". peft adapts {_LORA_KIND_NAMES}: name such layers with "
                "lora_targets, unfreeze some, or set adapter=None."
            )
            raise ValueError(msg)
        return names
    patterns = _layers.check_patterns(targets, "lora_targets")
    chosen = set()
    for pattern in patterns:
        hits = [name for name in layers if fnmatchcase(name, pattern)]
        if not hits:
            msg = (
                f"lora_targets pattern {pattern!r} matches no layer with weights of "
                f"{type(module).__name__}.{_layers._nearest(pattern, list(layers))} "
                f"Layers are: {_layers._listing(list(layers))}."
            )
            raise ValueError(msg)
        for name in hits:
            layer = layers[name]
            if isinstance(layer, _NormBase | nn.LayerNorm | nn.GroupNorm):
                continue  # normalisation layers are not adapted; their stats are saved
            if _layers.is_under(name, head):
                msg = (
                    f"lora_targets pattern {pattern!r} matches {name!r}, a layer of "
                    f"the head {list(head)}, which fit trains in full. Leave the "
                    "head out of lora_targets."
                )
                raise ValueError(msg)
            if not _adaptable(layer):
                msg = (
                    f"lora_targets pattern {pattern!r} matches {name!r}, an "
                    f"{type(layer).__name__}, which peft cannot adapt with LoRA; "
                    f"it adapts {_LORA_KIND_NAMES}. Leave {name!r} out of "
                    "lora_targets (freeze it or fine-tune it with adapter=None)."
                )
                raise ValueError(msg)
            if name in held:
                msg = (
                    f"lora_targets pattern {pattern!r} matches {name!r}, which "
                    "frozen holds: frozen layers get no adapter. Leave it out of "
                    "frozen or of lora_targets."
                )
                raise ValueError(msg)
            chosen.add(name)
    if not chosen:
        msg = (
            f"lora_targets={targets!r} matches only normalisation layers, which "
            "LoRA does not adapt."
        )
        raise ValueError(msg)
    return [name for name in layers if name in chosen]


# ----------------------------------------------------------------- config


def check_adapter(estimator):
    """Return the peft config that ``estimator.adapter`` asks for (None: no adapter).

    Imports peft when an adapter is asked for. Raises a ValueError for an
    adapter that cannot compose with the estimator's other settings.
    """
    adapter = estimator.adapter
    if adapter is None:
        return None
    peft = _peft()
    if isinstance(adapter, str):
        if adapter != "lora":
            msg = (
                "adapter must be None, 'lora' or a peft config object; got "
                f"{adapter!r}."
            )
            raise ValueError(msg)
        rank, alpha = estimator.lora_rank, estimator.lora_alpha
        config = peft.LoraConfig(
            r=rank,
            lora_alpha=float(rank if alpha is None else alpha),  # None: scale 1
            lora_dropout=estimator.lora_dropout,
            init_lora_weights=True,
        )
    elif isinstance(adapter, peft.PeftConfig):
        if adapter.is_prompt_learning or getattr(adapter, "modules_to_save", None):
            msg = (
                f"adapter={type(adapter).__name__}(...) is not supported: sktransfer "
                "injects adapters into the layers of any network (prompt learning "
                "methods need a transformers model) and trains the head in full "
                "itself (leave modules_to_save unset)."
            )
            raise ValueError(msg)
        config = copy.deepcopy(adapter)
    else:
        msg = (
            "adapter must be None, 'lora' or a peft config object (e.g. "
            f"peft.LoraConfig(r=8)); got {adapter!r} of type {type(adapter).__name__}."
        )
        raise TypeError(msg)
    if estimator.unfreeze:
        msg = (
            f"unfreeze={estimator.unfreeze!r} trains pretrained parameters from an "
            "epoch on, but an adapter keeps every pretrained weight fixed and "
            "trains the adapters and the head. Set unfreeze=None with an adapter "
            "(use frozen to choose the layers that get no adapter), or adapter=None."
        )
        raise ValueError(msg)
    return config


def _targeted(config, names):
    """``config`` with ``target_modules`` set to exactly the layers ``names``."""
    pattern = "(?:" + "|".join(re.escape(name) for name in names) + ")"
    return dataclasses.replace(copy.deepcopy(config), target_modules=pattern)


def apply(estimator, module, head, frozen):
    """Inject the adapter asked for by ``estimator`` into ``module``, in place.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        Its ``adapter``, ``lora_*`` parameters and ``frozen``.
    module : torch.nn.Module
        The network with its pretrained weights and its new head.
    head : sequence of str
        The head's submodule names.
    frozen : list of str
        The parameters matching ``frozen``, by their names before injection.

    Returns
    -------
    frozen : list of str
        The parameters to freeze, by their names after injection: every
        parameter outside the head and the adapters (the pretrained weights).
        None when ``estimator.adapter`` is None (``module`` unchanged).
    """
    config = check_adapter(estimator)
    warn_ignored(estimator, config)
    if config is None:
        return None
    peft = _peft()
    frozen_by_hand = [
        name for name, p in module.named_parameters() if not p.requires_grad
    ]
    held = sorted(set(frozen) | set(frozen_by_hand))
    given = getattr(config, "target_modules", None)
    if given is None or isinstance(estimator.adapter, str):
        names = resolve_targets(module, estimator.lora_targets, head, held)
        if isinstance(estimator.adapter, str):
            check_groups(module, names, estimator.lora_rank)
        config = _targeted(config, names)
    arrived = {name: p.requires_grad for name, p in module.named_parameters()}
    try:
        with warnings.catch_warnings():
            # merge() merges grouped convolutions itself (_lora_merge).
            warnings.filterwarnings("ignore", "LoRA adapter added to ConvNd layer")
            peft.inject_adapter_in_model(config, module, adapter_name=_ADAPTER_NAME)
    except (ValueError, TypeError) as exc:
        msg = f"peft could not inject adapter={estimator.adapter!r}: {exc}"
        raise ValueError(msg) from exc
    # peft marks every other parameter untrainable; sktransfer's freezing does
    # that for the fit and restores what the parameters arrived with.
    for name, param in module.named_parameters():
        if not _adapter_param(name):
            param.requires_grad_(arrived.get(_base_name(name), True))
    return [
        name
        for name, _ in module.named_parameters()
        if not _adapter_param(name) and not _layers.is_under(name, head)
    ]


def summary(module, head):
    """Return ``adapter_``: the adapted layers and the trainable parameters."""
    layers = adapted_layers(module)
    n_adapter = sum(
        p.numel() for n, p in module.named_parameters() if _adapter_param(n)
    )
    n_head = sum(
        p.numel() for n, p in module.named_parameters() if _layers.is_under(n, head)
    )
    n_total = sum(p.numel() for p in module.parameters()) - n_adapter
    n_trainable = n_adapter + n_head
    scales = {}
    for key in ("r", "lora_alpha", "scaling"):
        found = {
            name: getattr(module.get_submodule(name), key)[_ADAPTER_NAME]
            for name in layers
            if _ADAPTER_NAME in getattr(module.get_submodule(name), key, {})
        }
        distinct = set(found.values())
        scales[key] = distinct.pop() if len(distinct) == 1 else (found or None)
    return {
        "layers": layers,
        "lora_rank": scales["r"],
        "lora_alpha": scales["lora_alpha"],
        "scaling": scales["scaling"],
        "n_adapter_parameters": n_adapter,
        "n_head_parameters": n_head,
        "n_trainable_parameters": n_trainable,
        "n_parameters": n_total,
        "trainable_share": n_trainable / n_total if n_total else 0.0,
    }


def report(module, estimator):
    """Return ``adapter_`` (None without an adapter), printed at ``verbose > 0``."""
    if estimator.adapter is None:
        return None
    found = summary(module, _layers.resolve_head(module, estimator.head))
    if estimator.verbose:
        print(_announce(found))
    return found


def _announce(report):
    """Return the line ``verbose=1`` prints about the adapter."""
    layers = report["layers"]
    shown = ", ".join(layers[:6]) + (
        f", ... ({len(layers) - 6} more)" if len(layers) > 6 else ""
    )
    return (
        f"[sktransfer] Adapter on {len(layers)} layers ({shown}): "
        f"{report['n_trainable_parameters']:,} trainable parameters "
        f"({report['n_adapter_parameters']:,} in adapters, "
        f"{report['n_head_parameters']:,} in the head), "
        f"{100 * report['trainable_share']:.2f}% of {report['n_parameters']:,}"
    )
