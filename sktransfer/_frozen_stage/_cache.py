"""Frozen layers computed once: find a network's frozen leading stage and split it off.

When the frozen parameters make up the first stage of a network (a backbone
applied to the input before the trainable rest), fine-tuning recomputes that
stage's output for every sample in every epoch although it never changes. This
module decides whether ``fit`` caches it: the stage is found with
:mod:`torch.fx` (:mod:`._traced`) or where the network declares its cut
(:mod:`._declared`), checked (:mod:`._verify`), and the network split into the
stage and the rest (:mod:`._stage`), which share the original module's layers
and parameters.

A stage is cached only when all of these hold, and the reason is given when
one does not:

- ``torch.fx`` can trace the network's ``forward`` (no data-dependent control
  flow) and it takes one input;
- a node of the traced graph (the *cut*) is computed from the input by frozen
  layers and parameter-free operations only, and nothing after the cut reads
  the input (but for its number of rows, ``x.size(0)``) or any value before
  the cut;
- no layer of the stage behaves differently while training. Frozen means
  feature extraction: with ``freeze_bn_stats=True`` (the default) every fully
  frozen layer runs in evaluation mode while fine-tuning
  (:func:`~sktransfer._torch._held.hold_frozen_layers`: dropout and stochastic
  depth off, normalisation on its running statistics), so a frozen body is
  deterministic; it is traced as one call each. A stochastic layer without
  parameters outside the frozen blocks (the dropout between the pooled
  features and the head) belongs to the trained part and ends the stage.
  With ``freeze_bn_stats=False`` frozen layers follow the network's training
  mode, as skorch's ``Freezer`` leaves them, and a stage with active dropout
  or batch statistics is not cached;
- nothing between the array and the module looks at the samples: skorch's
  own dataset, iterators and methods, no ``collate_fn`` or sampler, no
  validation set of its own (:mod:`sktransfer._skorch._trust`);
- a probe confirms it: on a few samples, the stage gives the same output in
  training mode (twice, with different random seeds) as in evaluation mode, and
  the split network gives the same output as the whole one.

A network that ``torch.fx`` cannot trace (a Hugging Face model) may declare
its cut instead, as timm's models do: ``forward_features(x)`` returns the
head's input and ``forward_head(features)`` the output, with ``forward(x) ==
forward_head(forward_features(x))``. When tracing finds no stage, that cut is
cached if ``forward_features`` reads no trainable parameter, its layers run in
evaluation mode while training (held, as above), no top-level submodule
serves both sides, and the same probe confirms it
(:func:`~sktransfer._frozen_stage._declared.declared_stage`).
"""

from __future__ import annotations

import dataclasses

import torch
from skorch.utils import to_tensor
from torch import nn

from .._common import _dense_rows
from .._skorch import _trust
from .._torch._layers import is_under
from . import _store
from ._declared import DeclaredPart, declared_stage, declares_cut
from ._report import new_report
from ._stage import cache_device
from ._traced import traced_stage


def find_frozen_stage(module: nn.Module, probe: torch.Tensor):
    """Split ``module`` after its frozen leading stage, if that is safe to cache.

    The stage is found by tracing with ``torch.fx``; when that finds none and
    the module declares its cut (:func:`declares_cut`), the cut it declares is
    used if ``forward_features`` is fully frozen
    (:func:`~sktransfer._frozen_stage._declared.declared_stage`).

    Parameters
    ----------
    module : torch.nn.Module
        The network, with its frozen parameters already at
        ``requires_grad=False`` and frozen BatchNorm layers held in evaluation
        mode. It is not changed (its buffers and modes are restored after the
        probe).
    probe : torch.Tensor
        A few samples on the module's device, for the checks.

    Returns
    -------
    stage : FrozenStage or None
        The split network, or None when caching is not provably safe.
    reason : str or None
        Why not, when ``stage`` is None.
    """
    if module._forward_hooks or module._forward_pre_hooks:
        return None, f"{type(module).__name__} has forward hooks of its own"
    split, why = traced_stage(module, probe)
    if split is None and declares_cut(module):
        split, declared = declared_stage(module, probe)
        if split is not None:
            return split, None
        declared = f"its declared cut (forward_features) cannot be cached: {declared}"
        why = f"{declared}; {why}"
    return split, why


def reuse_key(stage, reuse):
    """Return ``(owner, settings)`` for the store's key, or None.

    The key is :func:`sktransfer._frozen_stage._store.key`'s.

    ``reuse`` is ``(record, head, settings)`` when ``fit`` loaded the
    network's weights from the pretrained ``record``; the stage's outputs are
    then shared with other fits from that record only if every tensor of the
    stage is the record's (none under ``head``, which ``fit`` initialises),
    and never for a cut the network declares (its ``forward_features`` is the
    network's own code, which the key's structure digest cannot name).
    """
    if reuse is None or isinstance(stage.stage, DeclaredPart):
        return None  # a declared cut runs the network's own code: not keyed
    record, head, settings = reuse
    names = list(stage.stage.state_dict(keep_vars=True))
    if any(n not in record.state_dict or is_under(n, head) for n in names):
        return None
    return _store.owner(record), settings


def plan(
    module,
    X,
    *,
    unfrozen_later,
    net,
    net_class,
    cache_frozen,
    limit,
    device,
    verbose,
    reuse=None,
):
    """Decide whether ``fit`` computes the frozen stage of ``module`` once.

    Parameters
    ----------
    module : torch.nn.Module
        The network, frozen and ready to fine-tune.
    X : ndarray
        The training samples.
    unfrozen_later : dict of str to int
        Frozen parameters that an unfreezing schedule trains from an epoch on;
        a stage holding one of them is not cached.
    net : skorch.NeuralNet
        The initialised net. Its data path must not look at the samples
        (:func:`sktransfer._skorch._trust.data_path_problem`): otherwise neither
        ``"auto"`` nor ``True`` caches. While the cache is used, ``module_``
        is the trainable rest only, so ``"auto"`` does not cache when a
        callback other than skorch's bookkeeping ones or one declaring
        ``sktransfer_safe = True`` (:mod:`sktransfer._skorch._safety`) may
        read or write the module's parameters (e.g. ``Checkpoint``,
        ``EarlyStopping`` with ``load_best=True``);
        ``True`` caches anyway.
    net_class : type
        The skorch class the estimator builds, whose methods are trusted.
    cache_frozen : "auto" or bool
        The estimator's parameter: ``"auto"`` caches when it is safe and the
        cache takes at most ``limit`` bytes, ``True`` whenever it is safe
        (else a ValueError saying why), ``False`` never.
    limit : int
        The most bytes ``"auto"`` lets the cache take.
    device : str or torch.device
        Where the module is.
    verbose : int
        Print what was decided, and why, when positive.
    reuse : tuple or None, default=None
        ``(record, head, settings)`` when the network's weights were loaded
        from a pretrained record (:func:`reuse_key`): the stage's outputs are
        then shared with the other fits from that record.

    Returns
    -------
    split : FrozenStage or None
        The split network, or None to fine-tune the whole network.
    report : dict
        :func:`new_report`, for ``frozen_cache_``.
    """
    if cache_frozen is False:
        return None, new_report("cache_frozen=False")
    if all(param.requires_grad for param in module.parameters()):
        split, why = None, "no parameter is frozen"
    elif (problem := _trust.data_path_problem(net, net_class)) is not None:
        split, why = None, problem
    else:
        split, why = find_frozen_stage(
            module, to_tensor(_dense_rows(X, 8), device=device)
        )
    if split is not None:
        thawed = [n for n, _ in split.stage.named_parameters() if n in unfrozen_later]
        if thawed:
            split, why = (
                None,
                (
                    f"unfreeze trains {thawed[0]} of the frozen stage from epoch "
                    f"{unfrozen_later[thawed[0]]}"
                ),
            )
    if split is not None and cache_frozen == "auto":
        name = _trust.callback_on_module(net.callbacks_)
        if name is not None:
            split, why = (
                None,
                (
                    f"the callback {name!r} may read or write the module's parameters, "
                    "which are only the trainable rest's while the cache is used; "
                    "cache_frozen=True caches anyway"
                ),
            )
    nbytes = 0
    if split is not None:
        nbytes = split.nbytes(X.shape[0])
        if cache_frozen == "auto" and nbytes > limit:
            split = None
            why = (
                f"its outputs would take {nbytes / 2**20:.0f} MiB, more than the "
                f"training data or 1 GiB ({limit / 2**20:.0f} MiB); "
                "cache_frozen=True caches them anyway"
            )
    if split is None:
        if cache_frozen is True:
            msg = (
                f"cache_frozen=True, but the frozen layers cannot be computed once: "
                f"{why}. Set cache_frozen='auto' to fine-tune without the cache "
                "when it cannot be used."
            )
            raise ValueError(msg)
        if verbose and why != "no parameter is frozen":
            print(f"[sktransfer] Not caching the frozen layers: {why}.")
        return None, new_report(why, nbytes=nbytes)
    keep_on = cache_device(device, nbytes)
    split = dataclasses.replace(split, reuse=reuse_key(split, reuse))
    report = new_report(
        cached=True, stage=split.cut, nbytes=nbytes, device=str(keep_on)
    )
    if verbose:
        print(
            f"[sktransfer] Frozen layers computed once, up to {split.cut!r}: "
            f"{split.sample_shape} per sample, {nbytes / 2**20:.1f} MiB on {keep_on}"
        )
    return split, report
