"""Frozen-stage outputs shared by the fits that fine-tune from one pretrained record.

The candidates of a grid search, the folds of a cross-validation and the
settings of :func:`~sktransfer.compare_transfer` are clones of one estimator:
they share its pretrained record (:class:`sktransfer._pretrained._record._Pretrained`)
by identity, and ``fit`` loads every weight of the network except the head's
from it. When they freeze the same leading stage, each would compute the same
stage outputs for the same rows. The store keeps those outputs, keyed by
ownership rather than by the weights' content:

- the record the stage's weights were loaded from (by identity: a record is
  never changed, and its entries are dropped when it is garbage-collected);
- the frozen and head settings, and the traced stage (its generated code,
  each layer's class, settings and hooks: no weights);
- a digest of the rows (their values, shape and dtype, in order) and how the
  stage is run (batch size, device, autocast).

A fit whose stage holds weights of no record (a module instance passed as
``net``, ``pretrained=False``) computes its stage's outputs and keeps them for
that fit only. No weight is hashed, and prediction never consults the store.

The store lives in the process (each joblib or Dask worker has its own) and
holds at most :func:`frozen_store_info`'s ``max_bytes`` (1 GiB by default,
:func:`set_frozen_store_limit`); the least recently used outputs are dropped
first. Stored tensors are never written to: the fits only read them.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from collections import OrderedDict
from numbers import Integral

import numpy as np
import torch
import torch.fx
from scipy import sparse

from .._compat import _get_current_dispatch_mode, _is_torch_function_mode_enabled

_DEFAULT_LIMIT = 2**30


class _Store:
    """A least-recently-used mapping of digests to tensors, bounded in bytes."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value):
        """Keep ``value`` under ``key`` if it fits; return whether it was kept."""
        size = _nbytes(value)
        with self._lock:
            if size > self.max_bytes:
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= _nbytes(old)
            self._entries[key] = value
            self.nbytes += size
            self._shrink()
            return True

    def _shrink(self):
        while self.nbytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= _nbytes(dropped)

    def drop_owner(self, owner):
        """Drop the entries of ``owner`` (the token of a collected record)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                self.nbytes -= _nbytes(self._entries.pop(key))

    def resize(self, max_bytes):
        with self._lock:
            self.max_bytes = max_bytes
            self._shrink()

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.nbytes = 0
            self.hits = 0
            self.misses = 0

    def info(self):
        with self._lock:
            return {
                "entries": len(self._entries),
                "nbytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


STORE = _Store(_DEFAULT_LIMIT)


def _nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def frozen_store_info() -> dict:
    """Report the process's store of frozen-stage outputs.

    Read more in the :doc:`User Guide </user_guide/frozen_stage>`.

    Returns
    -------
    info : dict
        ``entries`` (stored outputs), ``nbytes`` (their size in bytes),
        ``max_bytes`` (the bound), ``hits`` and ``misses`` (lookups that
        reused stored outputs, and those that computed them, since the last
        :func:`clear_frozen_store`).

    Examples
    --------
    >>> from sktransfer import frozen_store_info
    >>> sorted(frozen_store_info())
    ['entries', 'hits', 'max_bytes', 'misses', 'nbytes']
    """
    return STORE.info()


def clear_frozen_store() -> None:
    """Drop every stored frozen-stage output of this process and reset the counts.

    Read more in the :doc:`User Guide </user_guide/frozen_stage>`.
    """
    STORE.clear()


def set_frozen_store_limit(max_bytes: int) -> None:
    """Bound the store of frozen-stage outputs of this process to ``max_bytes``.

    Outputs that no longer fit are dropped at once, the least recently used
    first; ``0`` turns reuse off.

    Read more in the :doc:`User Guide </user_guide/frozen_stage>`.

    Parameters
    ----------
    max_bytes : int
        The most bytes the stored outputs may take, on every device together.

    Raises
    ------
    ValueError
        If ``max_bytes`` is not a non-negative int.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, Integral):
        msg = f"max_bytes must be a non-negative int; got {max_bytes!r}."
        raise ValueError(msg)
    if max_bytes < 0:
        msg = f"max_bytes must be a non-negative int; got {max_bytes!r}."
        raise ValueError(msg)
    STORE.resize(int(max_bytes))


# ------------------------------------------------------------------ digests


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


def rows_digest(X):
    """Return the digest of the rows of ``X``: values, shape, dtype, in order."""
    h = hashlib.blake2b(digest_size=16)
    if sparse.issparse(X):
        X = X.tocsr()
        h.update(f"csr|{X.dtype.str}|{X.shape}|".encode())
        for part in (X.data, X.indices, X.indptr):
            h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
        return h.hexdigest()
    if isinstance(X, torch.Tensor):
        h.update(f"torch|{X.dtype}|{tuple(X.shape)}|".encode())
        h.update(_tensor_bytes(X))
    else:
        X = np.ascontiguousarray(X)
        h.update(f"numpy|{X.dtype.str}|{X.shape}|".encode())
        h.update(X.reshape(-1).view(np.uint8))
    return h.hexdigest()


def owner(record):
    """Return the token naming ``record`` in keys; its entries go when it does."""
    token = _token(record)
    with _TOKENS_LOCK:
        if token not in _WATCHED:
            _WATCHED.add(token)
            weakref.finalize(record, _forget, token)
    return token


_WATCHED = set()


def _forget(token):
    _WATCHED.discard(token)
    STORE.drop_owner(token)


def key(stage, X, *, owner, settings, batch_size, device, keep_on):
    """Return the store key of ``stage``'s outputs for ``X`` run this way.

    Parameters
    ----------
    stage : torch.fx.GraphModule
        The frozen stage, every weight of which the record ``owner`` names
        holds.
    X : ndarray, sparse matrix or torch.Tensor
        The rows.
    owner : str
        :func:`owner` of the pretrained record.
    settings : tuple
        Plain values that chose the stage (the estimator's ``frozen``,
        ``head`` and ``freeze_bn_stats``).
    batch_size, device, keep_on
        How the stage runs and where its outputs are kept.

    Returns
    -------
    key : tuple or None
        None while a torch function or dispatch mode is active: such a mode
        may change what any operation computes, and no key can name it.
    """
    if modes_active():
        return None
    device = torch.device(device)
    autocast = (
        torch.is_autocast_enabled(device.type),
        torch.get_autocast_dtype(device.type),
    )
    how = (int(batch_size), str(device), str(torch.device(keep_on)), str(autocast))
    names = tuple(stage.state_dict(keep_vars=True))
    return (
        owner,
        _settings(settings),
        names,
        structure_digest(stage),
        rows_digest(X),
        how,
    )
