"""Pretrained weights in and out: safe weight files, state dicts, modules, estimators.

A weight file is ``torch.save`` of a dict of tensors and plain values (str, int,
float, bool, None, lists, dicts), read back only with
``torch.load(weights_only=True)``. That loader rebuilds tensors and plain
containers and refuses every other object a pickle may name, so opening a file
can never run code. It needs nothing beyond PyTorch, which is why sktransfer
does not add ``safetensors`` as a dependency.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._record import _Pretrained

# What every file written by save_source says about itself.
FORMAT = "sktransfer.source"
FORMAT_VERSION = 1

# numpy dtype kinds whose labels are plain Python values after ``tolist``.
_PLAIN_KINDS = "biufU"
_PLAIN_TYPES = (str, int, float, bool)


def cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a detached CPU copy of a state dict, never sharing memory with it."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _plain(value):
    """Turn numpy scalars and other values of skorch's history into JSON ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def save(record: _Pretrained, file: Any, *, version: str, estimator: str) -> None:
    """Write ``record`` to ``file`` (a path or a writable binary file object)."""
    classes = record.classes
    if classes is not None:
        bad = [c for c in classes.tolist() if not isinstance(c, _PLAIN_TYPES)]
        if classes.dtype.kind not in _PLAIN_KINDS + "O" or bad:
            msg = (
                f"Cannot save the source classes {classes!r}: a weight file holds "
                "class labels that are str, int, float or bool only"
                + (f" (found {type(bad[0]).__name__})" if bad else "")
                + "."
            )
            raise ValueError(msg)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sktransfer_version": version,
        "estimator": estimator,
        "state_dict": dict(record.state_dict),
        "shapes": {key: list(value.shape) for key, value in record.state_dict.items()},
        "sample_shape": None
        if record.sample_shape is None
        else list(record.sample_shape),
        "n_outputs": record.n_outputs,
        "classes": None if classes is None else classes.tolist(),
        "classes_dtype": None if classes is None else classes.dtype.str,
        "history": json.dumps(record.history, default=_plain),
        "feature_names": None
        if record.feature_names is None
        else [str(name) for name in record.feature_names],
    }
    if not isinstance(file, (str, os.PathLike)):
        torch.save(payload, file)
        return
    # Write next to the target and rename, so that a failed save leaves no
    # truncated file behind and an existing file intact.
    folder = os.path.dirname(os.path.abspath(file))
    handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(tmp, file)
    except BaseException:
        os.unlink(tmp)
        raise


def _refuse(file, reason):
    name = file if isinstance(file, (str, os.PathLike)) else type(file).__name__
    msg = (
        f"{str(name)!r} is not a weight file written by save_source: {reason}. "
        "sktransfer opens weight files with torch.load(weights_only=True), which "
        "refuses anything but tensors and plain values, so a file that would run "
        "code is never executed."
    )
    return ValueError(msg)


def read(file: Any) -> _Pretrained:
    """Read a file written by :func:`save`; refuse anything else with a ValueError."""
    try:
        with warnings.catch_warnings():
            # A pickle protocol torch does not write: refused below if unsafe.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(file, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise _refuse(file, f"torch.load refused it ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _refuse(
            file,
            f"it holds no {FORMAT!r} record (for a state dict written with "
            "torch.save, pass torch.load(path, weights_only=True) to load_source)",
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _refuse(
            file,
            f"its format version {version!r} is newer than this sktransfer reads "
            f"({FORMAT_VERSION}); upgrade sktransfer",
        )
    state = payload.get("state_dict")
    shapes = payload.get("shapes")
    if not isinstance(state, dict) or not isinstance(shapes, dict):
        raise _refuse(file, "it has no state_dict and shapes")
    problems = [
        key
        for key, value in state.items()
        if not isinstance(value, torch.Tensor) or list(value.shape) != shapes.get(key)
    ] + [key for key in shapes if key not in state]
    if problems:
        raise _refuse(
            file, f"its weights and recorded shapes disagree for {sorted(problems)}"
        )
    classes = payload.get("classes")
    if classes is not None:
        classes = np.asarray(classes, dtype=np.dtype(payload["classes_dtype"]))
    sample_shape = payload.get("sample_shape")
    feature_names = payload.get("feature_names")  # absent from older files
    if feature_names is not None:
        feature_names = np.asarray(feature_names, dtype=object)
    return _Pretrained(
        state_dict=state,
        sample_shape=None if sample_shape is None else tuple(sample_shape),
        n_outputs=payload.get("n_outputs"),
        classes=classes,
        history=json.loads(payload.get("history", "[]")),
        feature_names=feature_names,
    )


def from_state_dict(state: Mapping) -> _Pretrained:
    """Make a record from a ``state_dict``-like mapping of names to tensors."""
    bad = [
        f"{key!r}: {type(value).__name__}"
        for key, value in state.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        msg = (
            "A state_dict given to load_source must map parameter names (str) to "
            f"torch.Tensor; these entries do not: {', '.join(bad)}."
        )
        raise TypeError(msg)
    if not state:
        msg = "The state_dict given to load_source is empty; it holds no weights."
        raise ValueError(msg)
    return _Pretrained(
        state_dict=cpu_state(state),
        sample_shape=None,
        n_outputs=None,
        classes=None,
        history=[],
    )


def from_module(module: nn.Module) -> _Pretrained:
    """Make a record from the weights of a trained module instance."""
    return from_state_dict(module.state_dict())
