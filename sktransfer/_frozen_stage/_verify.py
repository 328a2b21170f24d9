"""The checks a split passes before it is cached: layer modes and a probe batch."""

from __future__ import annotations

import torch
from torch import nn

from .._compat import _DropoutNd, _NormBase
from .._torch._probe import modes_restored


def mode_problem(name, layer):
    """Why ``layer``, not held, computes otherwise while training.

    It draws random numbers, or normalises with batch statistics; None if not.
    """
    kind = type(layer).__name__
    if isinstance(layer, _DropoutNd) and layer.p > 0:
        return f"{name} ({kind}, p={layer.p}) is random while training"
    if isinstance(layer, nn.RReLU):
        return f"{name} ({kind}) is random while training"
    if isinstance(layer, _NormBase) and layer.track_running_stats:
        return (
            f"{name} ({kind}) normalises with batch statistics while "
            "training (freeze_bn_stats=False, or parameters of it trainable)"
        )
    return None


def probe_split(module, stage, rest, X):
    """Check on ``X`` that the stage is deterministic and the split faithful.

    Returns why not (None if it is) and the stage's output.
    """
    buffers = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        with modes_restored(module), torch.no_grad(), torch.random.fork_rng():
            module.eval()
            expected = stage(X)
            whole = module(X)
            if not isinstance(expected, torch.Tensor):
                return "the frozen stage's output is not a single tensor", None
            if not _close(rest(expected), whole):
                why = "the split network does not reproduce the network's output"
                return why, None
            module.train()
            for seed in (0, 1):
                torch.manual_seed(seed)
                if not _close(stage(X), expected):
                    why = (
                        "the frozen stage's output changes while training "
                        "(random or batch-dependent operations)"
                    )
                    return why, None
    except Exception as exc:  # noqa: BLE001 (a failing probe only means: no cache)
        why = f"the split network fails on a probe batch ({type(exc).__name__}: {exc})"
        return why, None
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(buffers[name])
    return None, expected


def _close(a, b):
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    )
