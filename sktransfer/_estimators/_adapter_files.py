"""Adapter files: the adapter, the head and the normalisation statistics.

``save_adapter`` writes a safetensors file (tensors and text metadata only,
never code) holding what an adapted network has beyond its pretrained
weights, and a SHA-256 digest of those weights; ``load_adapter`` refuses a
file whose digest is not that of the estimator's pretrained weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import _NormBase
from .._torch import _layers

if TYPE_CHECKING:
    from typing_extensions import Self

from .._torch._lora import (
    _adapter_param,
    _base_name,
    adapted_layers,
    is_adapter_layer,
    summary,
)
from .._torch._lora_merge import merged

_FORMAT = "sktransfer-adapter-1"
# What fit learns from y, besides the weights (classifier and regressor).
_FITTED = ("classes_", "n_outputs_", "_y_ndim", "_y_mean", "_y_scale")


def _saved_keys(module, head):
    """State keys an adapter file holds: adapters, head, normalisation buffers."""
    norms = {
        name
        for name, layer in module.named_modules()
        if isinstance(layer, _NormBase) and not _layers.is_under(name, head)
    }
    keys = []
    for key in module.state_dict():
        owner = key.rpartition(".")[0]
        if (
            _adapter_param(key)
            or _layers.is_under(key, head)
            or (owner in norms and key.rpartition(".")[2] in _NORM_BUFFERS)
        ):
            keys.append(key)
    return keys


_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def base_digest(module, head):
    """SHA-256 of the pretrained weights an adapted ``module`` is built on.

    Over the state entries that an adapter file does not hold (the
    pretrained parameters and buffers, by their names in the pretrained
    network), their dtypes, shapes and bytes.
    """
    saved = set(_saved_keys(module, head))
    state = module.state_dict()
    digest = hashlib.sha256()
    for key in sorted(k for k in state if k not in saved):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(
            f"{_base_name(key)}|{tensor.dtype}|{tuple(tensor.shape)}|".encode()
        )
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, type):
        return value.__name__
    return str(value)


def _fitted_metadata(estimator):
    fitted = {}
    for name in _FITTED:
        if hasattr(estimator, name):
            value = getattr(estimator, name)
            if isinstance(value, np.ndarray):
                value = {"values": value.tolist(), "dtype": value.dtype.str}
            elif isinstance(value, np.generic):
                value = value.item()
            fitted[name] = value
    return {
        "fitted": fitted,
        "sample_shape": list(estimator._sample_shape),
        "n_features_in": int(estimator.n_features_in_),
        "multilabel": bool(getattr(estimator, "_multilabel_y", False)),
    }


def _config_json(module):
    configs = {}
    for layer in module.modules():
        if is_adapter_layer(layer):
            configs = {
                "r": dict(getattr(layer, "r", {})),
                "lora_alpha": dict(getattr(layer, "lora_alpha", {})),
            }
            break
    return json.dumps(configs, default=_json_default)


def save(estimator, path):
    """Write the adapter, the head and the normalisation buffers to ``path``."""
    from safetensors.torch import save_file

    module = estimator.net_.module_
    head = estimator.head_
    if not adapted_layers(module):
        msg = (
            f"This {type(estimator).__name__} was fitted with adapter=None: it has no "
            "adapter to save. Fit it with adapter='lora', or save the whole "
            "network (e.g. pickle the estimator)."
        )
        raise ValueError(msg)
    state = module.state_dict()
    tensors = {
        key: state[key].detach().to("cpu", copy=True).contiguous()
        for key in _saved_keys(module, head)
    }
    metadata = {
        "format": _FORMAT,
        "estimator": type(estimator).__name__,
        "base_digest": base_digest(module, head),
        "head": json.dumps(list(head)),
        "adapter": _config_json(module),
        "layers": json.dumps(adapted_layers(module)),
        "target": json.dumps(_fitted_metadata(estimator), default=_json_default),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def _read(path):
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(os.fspath(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        msg = f"Cannot read an adapter file from {path!r}: {exc}"
        raise ValueError(msg) from exc
    if metadata.get("format") != _FORMAT:
        msg = (
            f"{path!r} is not an adapter file written by save_adapter (its metadata "
            f"format is {metadata.get('format')!r}, expected {_FORMAT!r})."
        )
        raise ValueError(msg)
    return tensors, metadata


def _build_from_metadata(estimator, metadata):
    """Set up an unfitted ``estimator`` as fit would, without training."""
    from .._common import _seeded

    target = json.loads(metadata["target"])
    fitted = {}
    for name, value in target["fitted"].items():
        if isinstance(value, dict):
            value = np.asarray(value["values"], dtype=np.dtype(value["dtype"]))
        fitted[name] = value
    n_outputs = (
        len(fitted["classes_"])
        if "classes_" in fitted and not target["multilabel"]
        else fitted.get("n_outputs_", None)
    )
    if n_outputs is None:
        n_outputs = len(fitted["classes_"])
    if target["multilabel"]:
        estimator._multilabel_y = True
    X = np.zeros((8, *target["sample_shape"]), dtype=np.float32)
    from .._skorch import _frozen

    with _seeded(estimator.random_state, "target"), _frozen.fit_scope():
        net, _ = estimator._build_net(X, n_outputs, phase="target")
    for name, value in fitted.items():
        setattr(estimator, name, value)
    estimator.n_features_in_ = target["n_features_in"]
    estimator._sample_shape = tuple(target["sample_shape"])
    estimator.frozen_cache_ = {
        "cached": False,
        "stage": None,
        "nbytes": 0,
        "device": None,
        "reason": "loaded by load_adapter",
        "outputs": None,
    }
    estimator._predict_stage = None
    estimator.head_ = _layers.resolve_head(net.module_, estimator.head)
    estimator.net_ = net


def _check_scale(path, name, metadata, module):
    """Refuse a file whose LoRA scale ``lora_alpha / r`` differs from ``module``'s.

    The factors alone would load, and the network would compute another
    function (files written before ``lora_alpha=None`` meant ``alpha = r``
    hold ``lora_alpha=8`` at any rank).
    """
    saved = json.loads(metadata.get("adapter") or "{}")
    here = json.loads(_config_json(module))
    if not saved.get("lora_alpha") or saved.get("lora_alpha") == here.get("lora_alpha"):
        return
    if saved.get("r") != here.get("r"):
        return  # the shapes differ: the check that follows names them
    alpha = set(saved["lora_alpha"].values())
    msg = (
        f"{path!r} was fitted with lora_alpha={_one(alpha)!r} (rank "
        f"{_one(set(saved['r'].values()))!r}); this {name} has lora_alpha="
        f"{_one(set(here.get('lora_alpha', {}).values()))!r}, which scales the "
        f"updates otherwise. Set lora_alpha={_one(alpha)!r} to load it."
    )
    raise ValueError(msg)


def _one(values):
    return next(iter(values)) if len(values) == 1 else sorted(values)


def load(estimator, path):
    """Load an adapter file into ``estimator`` (see ``load_adapter``)."""
    tensors, metadata = _read(path)
    name = type(estimator).__name__
    if metadata.get("estimator") != name:
        msg = (
            f"{path!r} holds the adapter of a {metadata.get('estimator')}; "
            f"load it into a {metadata.get('estimator')}, not a {name}."
        )
        raise ValueError(msg)
    if estimator.adapter is None:
        msg = (
            f"{path!r} holds an adapter, but this {name} has adapter=None. Set "
            "adapter (and lora_rank, lora_targets) as for the fit that saved it: "
            f"{metadata.get('adapter')}."
        )
        raise ValueError(msg)
    previous = dict(vars(estimator))
    try:
        if not hasattr(estimator, "net_"):
            _build_from_metadata(estimator, metadata)
        module = estimator.net_.module_
        head = estimator.head_
        digest = base_digest(module, head)
        if digest != metadata["base_digest"]:
            msg = (
                f"{path!r} adapts other pretrained weights than this {name} holds "
                f"(digest of the base weights {metadata['base_digest'][:12]}... in "
                f"the file, {digest[:12]}... here). Load it into an estimator with "
                "the pretrained weights it was fitted on (fit_source, load_source "
                "or the same module as net)."
            )
            raise ValueError(msg)
        _check_scale(path, name, metadata, module)
        expected = {key: state.shape for key, state in module.state_dict().items()}
        wanted = set(_saved_keys(module, head))
        missing = sorted(wanted - set(tensors))
        unexpected = sorted(k for k in tensors if expected.get(k) != tensors[k].shape)
        if missing or unexpected:
            msg = (
                f"{path!r} does not fit this {name}'s adapter "
                f"({metadata.get('adapter')} on {metadata.get('layers')} in the file): "
                + (f"missing {_layers._listing(missing)}; " if missing else "")
                + (
                    "not in this network or of another shape: "
                    f"{_layers._listing(unexpected)}; "
                    if unexpected
                    else ""
                )
                + "set adapter, lora_rank, lora_targets and head as for the fit "
                "that saved it."
            )
            raise ValueError(msg)
        with torch.no_grad():
            state = module.state_dict()
            for key, value in tensors.items():
                state[key].copy_(value)
        estimator.adapter_ = summary(module, head)
        estimator._predict_stage = None  # weights changed: no stored stage
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(previous)
        raise
    return estimator


class _Adapters:
    """``save_adapter``, ``load_adapter`` and ``merge``; a base of ``_BaseTransfer``."""

    def save_adapter(self, path: str | os.PathLike) -> None:
        """Save the adapter, the head and the normalisation statistics.

        A safetensors file (no code, loaded without running any): the
        adapters' parameters, the head's parameters and buffers, the running
        statistics of the shared normalisation layers (which
        ``freeze_bn_stats=False`` lets training update; peft's own files
        leave them out, huggingface/peft#1732), and in its metadata a SHA-256
        digest of the pretrained weights it adapts and what ``load_adapter``
        needs to rebuild the fitted estimator. The pretrained weights are not
        in it: with LoRA at rank 8 the file is a small share of the network.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Raises
        ------
        ValueError
            If the estimator was fitted without an adapter.
        """
        check_is_fitted(self)
        save(self, path)

    def load_adapter(self, path: str | os.PathLike) -> Self:
        """Load an adapter file written by :meth:`save_adapter`.

        The estimator must hold the pretrained weights the adapter was fitted
        on (from :meth:`fit_source`, :meth:`load_source` or the module given
        as ``net``) and the same ``adapter``, ``lora_*`` and ``head``
        settings; an unfitted estimator is then built as ``fit`` would build
        it (without training), a fitted one gets the file's adapter and head.
        The file is read with safetensors: no code runs.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save_adapter`.

        Returns
        -------
        self : object
            The estimator, fitted, predicting as the one that saved the file.

        Raises
        ------
        ValueError
            If the file is not an adapter file, if its base weights are not
            this estimator's (the digests differ), or if its adapter does not
            fit this estimator's network. The estimator is left unchanged.
        """
        return load(self, path)

    def merge(self) -> nn.Module:
        """Return the fitted network with its adapters merged into its layers.

        A plain PyTorch module (no peft layer; each adapted weight becomes
        ``W + (lora_alpha / lora_rank) B A``, Hu et al. 2021, eq. 3) that
        computes in evaluation mode what the adapted ``net_.module_``
        computes, within floating-point rounding, for ``nn.Linear``,
        ``nn.Conv2d`` and grouped ``nn.Conv2d`` (which peft cannot merge: it
        becomes an ungrouped ``nn.Conv2d``). The estimator is not changed.

        Returns
        -------
        module : torch.nn.Module
            A merged copy of ``net_.module_``, in the mode ``net_.module_``
            is in (call ``.eval()`` to predict). It takes what
            ``net_.module_`` takes and returns the head's outputs (a
            classifier's logits). For a :class:`~sktransfer.HuggingFaceNet`
            that is one int64 tensor of shape ``(n_texts, 2, length)``: the
            token ids in ``[:, 0]`` and the attention mask (1 on tokens) in
            ``[:, 1]`` (a third row of token type ids for sentence pairs);
            not raw texts, and not ``input_ids=``/``attention_mask=``
            keyword arguments. Tokenize with ``net.load_tokenizer()``
            (``padding=True``, ``truncation=True``, ``max_length``) and
            stack the two arrays on axis 1; the :ref:`User Guide
            <adapters>` shows it.

        Raises
        ------
        ValueError
            If peft cannot merge the adapter of a layer (the message names
            the layer).
        """
        check_is_fitted(self)
        return merged(self.net_.module_)
