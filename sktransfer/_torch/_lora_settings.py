"""The estimator's ``lora_*`` settings: those that cannot act, ranks peft refuses.

Checks of :func:`sktransfer._torch._lora.apply` before it injects an adapter:
a ``lora_*`` setting away from its default that cannot act is a warning
(with ``adapter=None``, or with a peft config whose own fields act instead),
and a rank peft cannot give a grouped convolution is a ValueError naming the
layers.
"""

from __future__ import annotations

import inspect
import math

from .._common import warn_at_user

__all__ = ["check_groups", "warn_ignored"]


# The estimator's LoRA settings and the field of a peft config that stands in
# for each when adapter is a config.
_SETTINGS = {
    "lora_rank": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_targets": "target_modules",
}


def warn_ignored(estimator, config):
    """Warn for each ``lora_*`` setting away from its default that cannot act.

    With ``adapter=None`` none acts; with a peft config the config's own
    fields act instead, except ``lora_targets``, which chooses the layers of
    a config without ``target_modules``.
    """
    defaults = inspect.signature(type(estimator).__init__).parameters
    adapter = estimator.adapter
    for name, field in _SETTINGS.items():
        value = getattr(estimator, name)
        if value == defaults[name].default or isinstance(adapter, str):
            continue
        if adapter is None:
            msg = (
                f"{name}={value!r} has no effect with adapter=None; set "
                f"adapter='lora' for it to act, or leave {name} at its default."
            )
        elif not hasattr(config, field):
            msg = (
                f"{name}={value!r} is ignored: adapter is a peft "
                f"{type(config).__name__}, which has no {field}; use "
                "adapter='lora' for it to act."
            )
        elif field == "target_modules" and config.target_modules is None:
            continue  # lora_targets chooses the layers of such a config
        else:
            msg = (
                f"{name}={value!r} is ignored: adapter is a peft "
                f"{type(config).__name__}, whose own {field}="
                f"{getattr(config, field)!r} is used; set {field} in the config"
                + (" to None" if field == "target_modules" else "")
                + " or use adapter='lora'."
            )
        warn_at_user(msg)


def check_groups(module, names, rank):
    """Refuse a rank peft cannot give a grouped convolution, naming the layers.

    peft's ``B`` factor of a grouped convolution is a grouped 1x1 convolution
    from ``r`` channels, so ``r`` must be a multiple of ``groups``.
    """
    bad = {
        name: module.get_submodule(name).groups
        for name in names
        if getattr(module.get_submodule(name), "groups", 1) > 1
        and rank % module.get_submodule(name).groups
    }
    if bad:
        listed = ", ".join(f"{name!r} (groups={g})" for name, g in bad.items())
        msg = (
            f"lora_rank={rank} cannot adapt the grouped convolutions {listed}: "
            "peft adapts a grouped convolution only at a rank that is a multiple "
            "of its groups. Set lora_rank to a multiple of "
            f"{math.lcm(*bad.values())}, or leave these layers out with "
            "lora_targets or frozen."
        )
        raise ValueError(msg)
