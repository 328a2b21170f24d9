"""Frozen-stage outputs shared, row by row, by the fits from one pretrained record.

The candidates of a grid search, the folds of a cross-validation and the
settings of :func:`~sktransfer.compare_transfer` are clones of one estimator:
they share its pretrained record (:class:`sktransfer._pretrained._record._Pretrained`)
by identity, and ``fit`` loads every weight of the network except the head's
from it. When they freeze the same leading stage, each would compute the same
stage outputs for the rows they share (a fold's training rows are most of the
next fold's, and all of them are the refit's). The store keeps those outputs
row by row, keyed by ownership rather than by the weights' content:

- the record the stage's weights were loaded from (by identity: a record is
  never changed, and its entries are dropped when it is garbage-collected);
- the frozen and head settings, and the traced stage (its generated code,
  each layer's class, settings and hooks: no weights);
- the rows' layout (dtype, sample shape) and how the stage is run (batch size,
  device, autocast); under that key, each row by a digest of its values.

A fit runs the stage only over the rows not stored yet, in batches of its
batch size, and stores them. A row computed in another batch than a fresh pass
would put it in may differ from that pass by float32 rounding (kernels may
block a batch differently); a fit whose rows are all stored from one earlier
fit on the same rows gets that fit's outputs bit for bit. A fit whose stage
holds weights of no record (a module instance passed as ``net``,
``pretrained=False``) computes its stage's outputs and keeps them for that fit
only. No weight is hashed, and prediction never consults the store.

The store lives in the process (each joblib or Dask worker has its own) and
holds at most :func:`frozen_store_info`'s ``max_bytes`` (1 GiB by default,
:func:`set_frozen_store_limit`); the least recently used outputs are dropped
first. Stored tensors are never written to: the fits only read them.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from numbers import Integral

import numpy as np
import torch

from ._digests import (
    _TOKENS_LOCK,
    _layout,
    _settings,
    _token,
    modes_active,
    row_digests,
    structure_digest,
)

_DEFAULT_LIMIT = 2**30


class _Rows:
    """The stored stage outputs of single rows, found by each row's digest."""

    __slots__ = ("index", "outputs")

    def __init__(self, outputs, digests):
        self.outputs = outputs
        self.index = {}
        for i, digest in enumerate(digests):
            self.index.setdefault(digest, i)


class _Store:
    """A least-recently-used mapping of stage keys to stored rows, bounded in bytes."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.rows_reused = 0
        self.rows_computed = 0

    def lookup(self, key, digests):
        """Return the positions of the stored rows among ``digests``, and those rows.

        ``([], None)`` when none is stored. The rows are a view of the store
        where they lie in order (a fit on the same rows), else a copy.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return [], None
            self._entries.move_to_end(key)
            found, index = [], []
            for position, digest in enumerate(digests):
                i = entry.index.get(digest)
                if i is not None:
                    found.append(position)
                    index.append(i)
            if not found:
                return [], None
            return found, _gather(entry.outputs, index)

    def add(self, key, digests, outputs):
        """Keep the rows ``outputs`` under ``key`` by their ``digests`` if they fit."""
        with self._lock:
            entry = self._entries.pop(key, None)
            known = {} if entry is None else entry.index
            new, seen = [], set()
            for i, digest in enumerate(digests):
                if digest not in known and digest not in seen:
                    seen.add(digest)
                    new.append(i)
            if entry is not None:
                self.nbytes -= _nbytes(entry.outputs)
            if not new and entry is not None:
                self._entries[key] = entry
                self.nbytes += _nbytes(entry.outputs)
                return True
            rows = outputs if len(new) == len(outputs) else outputs[new]
            if entry is None:
                kept = _Rows(rows, [digests[i] for i in new])
            else:
                kept = _Rows(torch.cat([entry.outputs, rows]), [])
                kept.index = dict(entry.index)
                for j, i in enumerate(new, start=len(entry.outputs)):
                    kept.index[digests[i]] = j
            if _nbytes(kept.outputs) > self.max_bytes:
                return False  # not even alone in the store: dropped
            self._entries[key] = kept
            self.nbytes += _nbytes(kept.outputs)
            self._shrink()
            return True

    def count(self, *, reused, computed):
        """Count a fit's lookup: a hit when no row was computed, else a miss."""
        with self._lock:
            if computed:
                self.misses += 1
            else:
                self.hits += 1
            self.rows_reused += reused
            self.rows_computed += computed

    def drop(self, key):
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.nbytes -= _nbytes(entry.outputs)

    def _shrink(self):
        while self.nbytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= _nbytes(dropped.outputs)

    def drop_owner(self, owner):
        """Drop the entries of ``owner`` (the token of a collected record)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                self.nbytes -= _nbytes(self._entries.pop(key).outputs)

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
            self.rows_reused = 0
            self.rows_computed = 0

    def info(self):
        with self._lock:
            return {
                "entries": len(self._entries),
                "nbytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "rows_reused": self.rows_reused,
                "rows_computed": self.rows_computed,
            }


def _gather(table, index):
    """Rows ``index`` of ``table``: a view where they are consecutive, else a copy."""
    first = index[0]
    if index == list(range(first, first + len(index))):
        return table[first : first + len(index)]
    return table.index_select(0, torch.as_tensor(index, device=table.device))


STORE = _Store(_DEFAULT_LIMIT)


def _nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def frozen_store_info() -> dict:
    """Report the process's store of frozen-stage outputs.

    Read more in the :doc:`User Guide </user_guide/frozen_stage>`.

    Returns
    -------
    info : dict
        ``entries`` (stored stages), ``nbytes`` (the size of their outputs in
        bytes), ``max_bytes`` (the bound), ``hits`` and ``misses`` (fits that
        found every row's outputs stored, and those that ran the stage over
        some rows: the stage passes), ``rows_reused`` and ``rows_computed``
        (rows found stored, and rows the stage ran on), since the last
        :func:`clear_frozen_store`.

    Examples
    --------
    >>> from sktransfer import frozen_store_info
    >>> sorted(frozen_store_info())
    ['entries', 'hits', 'max_bytes', 'misses', 'nbytes', 'rows_computed', 'rows_reused']
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
        The rows (their layout; each row is found by :func:`row_digests`).
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
        _layout(X),
        how,
    )


def outputs(split, X, *, batch_size, device, keep_on="cpu", report=None):
    """Return the frozen stage's outputs for ``X``, reusing the stored rows.

    As ``split.transform``, over the rows not stored yet only (all of them
    when ``split.reuse`` is None or the store is off), which are then stored.
    Before stored rows are reused, the stage runs the first 8 of them again
    and must reproduce them to float32 rounding (to 1e-4 relative, and 1e-5
    of their largest magnitude absolute: the key names the weights,
    layers and rows, not what the stage's code calls at run time: a torch
    function replaced by monkeypatching, say); otherwise every row is
    computed afresh.

    Parameters
    ----------
    split : sktransfer._frozen_stage._cache.FrozenStage
        The split network; ``split.reuse`` is ``(owner, settings)`` or None.
    X : ndarray, sparse matrix or torch.Tensor of shape (n_samples, ...)
        The rows.
    batch_size : int
        Rows per pass of the stage.
    device, keep_on : str or torch.device
        Where the stage runs, and where its outputs are kept.
    report : dict, default=None
        Receives ``outputs`` (``"computed"``, ``"reused"`` or ``"partly
        reused"``), ``digest_seconds`` (the time spent on the key and the
        rows' digests), ``compute_seconds`` (on the stage's pass; 0 when
        every row was reused) and ``store`` (:func:`frozen_store_info`).

    Returns
    -------
    out : torch.Tensor of shape (n_samples, ...)
        The outputs, on ``keep_on``; never to be written to.
    """

    def run(rows, size=batch_size):
        return split.transform(rows, batch_size=size, device=device, keep_on=keep_on)

    n, found, stored, store_key, digests = X.shape[0], [], None, None, None
    seconds = 0.0
    if split.reuse is not None and STORE.max_bytes > 0:
        start = time.perf_counter()
        owner_token, settings = split.reuse
        store_key = key(
            split.stage,
            X,
            owner=owner_token,
            settings=settings,
            batch_size=batch_size,
            device=device,
            keep_on=keep_on,
        )
        digests = None if store_key is None else row_digests(X)
        seconds = time.perf_counter() - start
        if store_key is not None:
            found, stored = STORE.lookup(store_key, digests)
        if found:
            probe = found[: min(8, batch_size)]
            fresh, kept = run(_take(X, probe), len(probe)), stored[: len(probe)]
            # Float32 rounding of a row's sums grows with their magnitude.
            atol = 1e-6 + 1e-5 * float(kept.abs().max())
            if not torch.allclose(fresh, kept, rtol=1e-4, atol=atol):
                STORE.drop(store_key)  # the stage computes otherwise now
                found, stored = [], None
    start = time.perf_counter()
    missing = None
    if not found:
        out = fresh = run(X)
    elif len(found) == n:
        out = stored
    else:
        missing = np.setdiff1d(np.arange(n), found)
        fresh = run(_take(X, missing))
        out = torch.empty((n, *fresh.shape[1:]), dtype=fresh.dtype, device=fresh.device)
        out[torch.as_tensor(found, device=out.device)] = stored
        out[torch.as_tensor(missing, device=out.device)] = fresh
    compute = time.perf_counter() - start if len(found) < n else 0.0
    if store_key is not None:
        if len(found) < n:
            new = digests if missing is None else [digests[i] for i in missing]
            STORE.add(store_key, new, fresh)
        STORE.count(reused=len(found), computed=n - len(found))
    if report is not None:
        how = "partly reused" if found else "computed"
        report.update(
            outputs="reused" if len(found) == n else how,
            digest_seconds=seconds,
            compute_seconds=compute,
            store=STORE.info(),
        )
    return out


def _take(X, positions):
    """Rows ``positions`` (ascending) of an array, sparse matrix or tensor."""
    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(X, torch.Tensor):
        return X[torch.from_numpy(positions)]
    return X[positions]
