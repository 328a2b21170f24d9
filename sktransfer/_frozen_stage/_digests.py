"""Digests naming a frozen stage's structure and each row, never its weights."""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref

import numpy as np
import torch
import torch.fx
from scipy import sparse

from .._compat import _get_current_dispatch_mode, _is_torch_function_mode_enabled


def _tensor_bytes(tensor):
    """Return the raw bytes of ``tensor`` as uint8 NumPy values (on the CPU)."""
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    return flat.view(torch.uint8).numpy()


# What torch keeps in every module's __dict__ (parameters, buffers, submodules,
# hooks, training): the rest of a module's attributes are its own settings.
_TORCH_OWN = frozenset(vars(torch.nn.Module())) | {"_compiled_call_impl"}
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)

# A token per object that is not a plain value (a function, a tensor attribute's
# owner...): the same object gets the same token for as long as it lives, and a
# new object never gets an old one's, even where Python reuses its id.
_TOKENS = weakref.WeakKeyDictionary()
_TOKENS_LOCK = threading.Lock()


def _token(value):
    """Return a token naming ``value`` by identity; a fresh one if it cannot be kept."""
    with _TOKENS_LOCK:
        try:
            token = _TOKENS.get(value)
            if token is None:
                token = _TOKENS[value] = uuid.uuid4().hex
        except TypeError:  # unhashable or no weak references: never shared
            token = uuid.uuid4().hex
    return f"{type(value).__qualname__}@{token}"


def _settings(value, depth=0):
    """Return a stable text of an attribute value: plain by value, others by token.

    Tensors and arrays go by their content; containers item by item (up to 8
    deep and 10,000 long); functions, classes and other objects by identity
    (:func:`_token`), so that two modules share a digest only if each setting
    is equal or the very same object.
    """
    if isinstance(value, _PLAIN):
        return f"{type(value).__qualname__}:{value!r}"
    if isinstance(value, torch.Tensor):
        return f"tensor:{value.dtype}:{tuple(value.shape)}:{_digest_bytes(value)}"
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        array = np.ascontiguousarray(value)
        data = hashlib.blake2b(array.reshape(-1).view(np.uint8), digest_size=16)
        return f"ndarray:{array.dtype.str}:{array.shape}:{data.hexdigest()}"
    plain = (tuple, list, set, frozenset, torch.Size, dict)
    if type(value) in plain and depth <= 8 and len(value) <= 10_000:
        if type(value) is dict:
            items = [
                f"{_settings(k, depth + 1)}={_settings(v, depth + 1)}"
                for k, v in value.items()
            ]
        else:
            items = [_settings(v, depth + 1) for v in value]
            if isinstance(value, (set, frozenset)):
                items.sort()
        return f"{type(value).__qualname__}[{','.join(items)}]"
    return _token(value)


def _digest_bytes(tensor):
    return hashlib.blake2b(_tensor_bytes(tensor), digest_size=16).hexdigest()


def structure_digest(module):
    """Return the digest of what ``module`` computes apart from its weights.

    Its code (a traced ``GraphModule``'s generated source, else its class),
    and for each submodule its name, class (and the class's ``forward``), its
    settings (every attribute outside torch's own, such as ``AvgPool2d``'s
    ``count_include_pad`` or ``MultiheadAttention``'s ``num_heads``, which
    ``extra_repr`` leaves out) and hooks.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(str(getattr(module, "code", type(module).__qualname__)).encode())
    for name, sub in module.named_modules():
        cls = type(sub)
        hooks = [
            _token(hook)
            for hooks in (sub._forward_pre_hooks, sub._forward_hooks)
            for hook in hooks.values()
        ]
        if isinstance(sub, torch.fx.GraphModule):
            # A traced graph: its generated code (digested here) is what it
            # runs; each trace makes a new class and graph object.
            h.update(f"{name}|graph|{sub.code}|{hooks}\n".encode())
            continue
        settings = [
            f"{key}={_settings(value)}"
            for key, value in vars(sub).items()
            if key not in _TORCH_OWN
        ]
        h.update(
            f"{name}|{cls.__module__}.{cls.__qualname__}|{_token(cls.forward)}|"
            f"{sub.extra_repr()}|{settings}|{hooks}\n".encode()
        )
    return h.hexdigest()


def modes_active():
    """Whether a torch function or dispatch mode is active (it may change any op)."""
    dispatch = _get_current_dispatch_mode() is not None
    return dispatch or bool(_is_torch_function_mode_enabled())


def row_digests(X):
    """Return the digest of each row of ``X`` (its values), in order, as bytes."""
    if sparse.issparse(X):
        X = X.tocsr()
        data, indices, indptr = X.data, X.indices, X.indptr
        return [
            hashlib.blake2b(
                data[a:b].tobytes() + b"|" + indices[a:b].tobytes(), digest_size=16
            ).digest()
            for a, b in zip(indptr[:-1], indptr[1:], strict=True)
        ]
    if isinstance(X, torch.Tensor):
        X = _tensor_bytes(X).reshape(X.shape[0], -1)
    else:
        X = np.ascontiguousarray(X).reshape(X.shape[0], -1).view(np.uint8)
    return [hashlib.blake2b(row, digest_size=16).digest() for row in X]


def _layout(X):
    """Return what a row's digest leaves out: its kind, dtype and shape."""
    if sparse.issparse(X):
        return f"sparse|{X.dtype.str}|{X.shape[1:]}"
    if isinstance(X, torch.Tensor):
        return f"torch|{X.dtype}|{tuple(X.shape[1:])}"
    return f"numpy|{np.dtype(X.dtype).str}|{tuple(X.shape[1:])}"
