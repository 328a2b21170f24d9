"""Pretrained weights sent to a Dask cluster once, not with every task.

Under ``joblib.parallel_backend("dask")``, ``GridSearchCV`` submits
``_fit_and_score(clone(estimator), X, y, ...)`` for every candidate and fold.
joblib's Dask backend scatters large top-level arguments such as ``X`` once,
but each clone is a new object that Dask pickles into its task, and with it the
source weights that all clones share. Here is how they travel once instead:

1. Main thread, ``clone``: ``__sklearn_clone__`` calls
   :func:`ship`; if joblib's active backend in this thread is the Dask
   backend, ``client.scatter`` sends the weights and the pretraining history
   to one worker, once per record and client. The future lives as long as
   the record; when the record is garbage collected, Dask releases the
   weights.
2. The client's event-loop thread, task submission: joblib's Dask backend
   submits from that thread, and there the record pickles as a reference (the
   future's key, a digest of the weights, and the small metadata) while the
   future is finished and its client running. Every other pickle
   (``pickle.dumps``, ``joblib.dump``, loky workers, a client without a
   shipment) carries the weights, so those pickles stay self-contained.
3. Scheduler and workers: the reference unpickles into a :class:`_Remote`
   record without touching the cluster (unpickling may run in an event loop,
   where a blocking call would deadlock). The first read of ``state_dict`` or
   ``history``, in the task's thread, takes the weights from the worker's own
   memory or, on any other worker, fetches them through the scheduler; checks
   them against the digest; and keeps them for the process, so each worker
   receives them once and its tasks share one copy. An unread :class:`_Remote`
   pickled again in an event loop (the scheduler forwarding the task) stays a
   reference; otherwise it pickles with its weights.

The weights are not broadcast: Dask's active memory manager drops replicas
that no task depends on (the reference is invisible to it) within seconds,
so each worker keeps its own copy in this module instead, the newest
``_KEEP`` payloads per process.

If the scatter fails, clones carry the weights as before (with a warning). If
the weights are gone from the cluster when a task reads them, the task fails
with a ``RuntimeError``; it never trains from other weights.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import threading
import weakref
from collections import Counter, OrderedDict

import torch
from joblib.parallel import get_active_backend

try:
    import distributed
except ImportError:  # only pytest's doctest collection imports this without Dask
    distributed = None

from .._common import warn_at_user
from ._record import _Pretrained

# Seconds to wait for the scatter, and on a worker for the weights.
_SCATTER_TIMEOUT = 120
_FETCH_TIMEOUT = 300

# How many payloads a process keeps after its tasks are done with them.
_KEEP = 2


class _Payload:
    """What a shipment holds: the weights and the pretraining history."""

    __slots__ = ("__weakref__", "history", "state_dict")

    def __init__(self, state_dict, history):
        self.state_dict = state_dict
        self.history = history

    def __reduce__(self):
        return _Payload, (self.state_dict, self.history)


# Client side: record -> {client id: (future of its payload, digest)}.
_SHIPMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SHIP_LOCK = threading.Lock()

# Worker side: key -> payload checked against its digest; the newest ones kept.
_RESOLVED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_KEPT: OrderedDict = OrderedDict()
_FETCH_LOCK = threading.Lock()
# How many times this process received each payload from another process.
_RECEIVED: Counter = Counter()


def digest(state_dict):
    """Return a hex digest of the names, dtypes, shapes and bytes of a state dict."""
    hasher = hashlib.blake2b(digest_size=16)
    for name in sorted(state_dict):
        value = state_dict[name]
        hasher.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
            hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            try:
                data = tensor.reshape(-1).view(torch.uint8).numpy()
            except (RuntimeError, TypeError):  # sparse or quantized tensors
                data = pickle.dumps(tensor)
            hasher.update(data)
        else:
            hasher.update(pickle.dumps(value))
    return hasher.hexdigest()


def _running_loop():
    """Return the event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _live(future, client):
    """Whether ``future`` still holds data that ``client`` can send references to."""
    return future.status == "finished" and client.status == "running"


def _active_client():
    """Return the client of joblib's active Dask backend in this thread, or None."""
    backend, _ = get_active_backend()
    client = getattr(backend, "client", None)
    if not isinstance(client, distributed.Client) or client.asynchronous:
        return None
    if client.status != "running":
        return None
    if _running_loop() is getattr(client.loop, "asyncio_loop", False):
        return None  # a blocking scatter from the client's own loop would deadlock
    return client


def ship(record):
    """Scatter the weights of ``record`` to the active Dask backend's cluster, once."""
    if isinstance(record, _Remote):
        return  # its weights are on the cluster already
    client = _active_client()
    if client is None:
        return
    with _SHIP_LOCK:
        shipments = _SHIPMENTS.setdefault(record, {})
        held = shipments.get(client.id)
        if held is not None and _live(held[0], client):
            return
        try:
            if record not in _DIGESTS:
                _DIGESTS[record] = digest(record.state_dict)
            future = client.scatter(
                _Payload(record.state_dict, record.history),
                hash=False,
                timeout=_SCATTER_TIMEOUT,
            )
        except Exception as exc:  # any failure: the weights go with every task
            msg = (
                "Could not send the pretrained weights to the Dask cluster once "
                f"({type(exc).__name__}: {exc}); every task carries them instead."
            )
            warn_at_user(msg, UserWarning)  # at clone's caller
            return
        shipments[client.id] = (future, _DIGESTS[record])


def reference(record):
    """Return the reduce tuple of a reference to ``record``, or None.

    A reference only when pickled in the event-loop thread of a client to whose
    cluster the weights were shipped, while that shipment is live.
    """
    loop = _running_loop()
    if loop is None:
        return None
    shipments = _SHIPMENTS.get(record)
    if not shipments:
        return None
    for future, hex_digest in list(shipments.values()):
        client = future.client
        if getattr(client.loop, "asyncio_loop", None) is loop and _live(future, client):
            return _Remote, (
                future.key,
                hex_digest,
                record.sample_shape,
                record.n_outputs,
                record.classes,
                record.feature_names,
            )
    return None


class _Remote(_Pretrained):
    """A record whose weights stay on the Dask cluster until first read.

    Behaves as the record it references: ``state_dict`` and ``history`` are
    fetched on first access and checked against the digest.
    """

    def __init__(
        self, key, hex_digest, sample_shape, n_outputs, classes, feature_names=None
    ):
        # Not the dataclass __init__: state_dict and history are properties here.
        for name, value in (
            ("_key", key),
            ("_digest", hex_digest),
            ("sample_shape", sample_shape),
            ("n_outputs", n_outputs),
            ("classes", classes),
            ("feature_names", feature_names),
            ("_payload", None),
            ("_lock", threading.Lock()),
        ):
            object.__setattr__(self, name, value)

    @property
    def state_dict(self):
        return self._resolve().state_dict

    @property
    def history(self):
        return self._resolve().history

    def __setattr__(self, name, value):
        msg = f"cannot assign to field {name!r} of a read-only record"
        raise AttributeError(msg)

    def __delattr__(self, name):
        msg = f"cannot delete field {name!r} of a read-only record"
        raise AttributeError(msg)

    def __reduce__(self):
        if self._payload is None and _running_loop() is not None:
            # The scheduler forwarding the task: the weights are not here, and
            # fetching them would block the event loop.
            return _Remote, (
                self._key,
                self._digest,
                self.sample_shape,
                self.n_outputs,
                self.classes,
                self.feature_names,
            )
        return _Pretrained, self._fields()

    def __repr__(self):
        return (
            f"{type(self).__name__}({self._key!r}, sample_shape="
            f"{self.sample_shape!r}, n_outputs={self.n_outputs!r})"
        )

    def _resolve(self):
        payload = self._payload
        if payload is None:
            with self._lock:
                if self._payload is None:
                    object.__setattr__(self, "_payload", fetch(self._key, self._digest))
                payload = self._payload
        return payload


def _from_worker_memory(key):
    """Return the payload stored under ``key`` on this worker, or None."""
    try:
        return distributed.get_worker().data[key]
    except (ValueError, KeyError):  # not on a worker, or not held here
        return None


def _from_cluster(key):
    """Fetch the payload stored under ``key`` through the scheduler (blocking)."""
    if _running_loop() is not None:
        msg = (
            f"The pretrained weights {key!r} are not in this process and cannot be "
            "fetched from inside an event loop."
        )
        raise RuntimeError(msg)
    client = distributed.get_client()
    # What Client.gather does for a future it owns; here there is only the key.
    response = client.sync(
        client.scheduler.gather, keys=[key], callback_timeout=_FETCH_TIMEOUT
    )
    if response.get("status") != "OK" or key not in response.get("data", {}):
        msg = (
            f"The pretrained weights {key!r} are gone from the Dask cluster: the "
            "estimator that sent them was garbage collected, or its client closed, "
            "before this task read them. Keep the estimator alive until its tasks "
            "finish."
        )
        raise RuntimeError(msg)
    _RECEIVED[key] += 1
    return response["data"][key]


def fetch(key, hex_digest):
    """Return the payload stored under ``key``, checked against ``hex_digest``."""
    with _FETCH_LOCK:
        payload = _RESOLVED.get(key)
        if payload is None:
            payload = _from_worker_memory(key)
            if payload is None:
                payload = _from_cluster(key)
            if not isinstance(payload, _Payload) or digest(payload.state_dict) != (
                hex_digest
            ):
                msg = (
                    "The pretrained weights fetched from the Dask cluster under "
                    f"{key!r} differ from those that were sent."
                )
                raise RuntimeError(msg)
            _RESOLVED[key] = payload
        _KEPT[key] = payload
        _KEPT.move_to_end(key)
        while len(_KEPT) > _KEEP:
            _KEPT.popitem(last=False)
        return payload
