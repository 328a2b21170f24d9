"""Frozen-stage outputs served from the store at prediction time too.

When :meth:`fit` computed its frozen leading stage once (:mod:`sktransfer._cache`),
the fitted network is that stage followed by the trained rest. A search
scores every candidate on the same test rows, and every candidate's stage holds
the same pretrained weights: the stage's outputs for those rows are the same for
all of them. :func:`rows` lets ``predict``, ``predict_proba``,
``decision_function``, ``score`` and ``transform`` take them from the process's
store (:mod:`sktransfer._store`), under the same key as the fits (digests of the
stage's weights, its structure and the rows, and how it is run), and run only
the rest through skorch's own prediction path.

The outputs are bit-identical to the plain path: the stage runs in evaluation
mode (as skorch runs the whole module when predicting) on the same batches of
the same size, and the rest runs on them batch by batch as the whole module
would. The store is consulted only when all of this is proven at the call:

- ``fit`` cached the stage (its proof: :func:`sktransfer._cache.plan`), the
  split and the whole module give bit-identical outputs on a few training
  samples in evaluation mode (``fit`` traced the training-mode ``forward``), and
  the key did not cost more than the stage's pass over the training rows
  (when that pass took over 50 ms, fit's timing of both decides: a stage
  cheaper than hashing its input is never worth a lookup);
- ``net_.module_`` is the object ``fit`` split, with the same ``forward``, no
  forward hooks or pre-hooks on it or any submodule (``torch.fx`` traced
  through the submodules it did not keep as layers, e.g. an ``nn.Sequential``,
  so their hooks would never run) and none registered globally, and each layer
  and tensor the stage and the rest run is still the module's own (a replaced
  layer means the plain path);
- the Python values the traced graph may have baked in are as they were when
  ``fit`` traced it (:func:`sktransfer._cache.python_state`): every submodule's
  plain attributes (numbers, strings, bools, containers of them; other objects
  by identity), no ``forward`` set on a submodule instance, the same classes'
  ``forward``. A temperature set on the module after ``fit`` means the plain
  path;
- the proof on the call's own rows: the first 8 rows of ``X``, as one batch in
  evaluation mode, give bit-identical outputs through the whole module and
  through the stage then the rest (this catches what no check above names,
  e.g. a module-level value ``forward`` reads); its cost is 8 rows through
  the network twice;
- the net's data path still looks at no sample (:mod:`sktransfer._trust`:
  ``iterator_valid`` or a method changed after ``fit`` means the plain path);
- the store is on and the stage's outputs for these rows fit in its bound, so
  prediction holds at most the store's bound more than the plain path does.

Weights changed after ``fit`` (``net_.partial_fit``, ``load_params``, an
in-place edit) change the key's weights digest: the stage is run afresh. The
fitted estimator's ``frozen_cache_`` says what the last prediction did.
Nothing of this survives pickling or ``copy.deepcopy``: a copy predicts on the
plain path.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from skorch.utils import to_tensor

from . import _cache, _step, _store, _trust
from ._common import _dense_rows, predict_batch_size
from ._compat import _torch_module
from ._layers import evaluating, modes_restored

# The rows of each prediction's X run through both the whole module and the
# split, which must agree bit for bit, before the split is used.
_PROOF_ROWS = 8

# The stage's pass over the training rows must take this long (seconds) for
# fit's timing of it against the key's to count: shorter ones are timer noise.
_TIMED = 0.05


class _Dropped:
    """What a pickled or copied estimator keeps of its fitted stage: why not."""

    reason = "the estimator was copied or unpickled after fit"


def _dropped():
    return _Dropped()


class PredictStage:
    """What ``fit`` proved about its frozen stage, kept to predict through it.

    Parameters
    ----------
    split : FrozenStage
        The split network ``fit`` trained the rest of.
    module : torch.nn.Module
        ``net_.module_`` as ``fit`` left it, which ``split`` shares layers with.
    """

    def __init__(self, split, module):
        self.split = split
        self.module = module
        self.forward = type(module).forward

    def __reduce__(self):
        # The split shares layers with net_.module_ by identity; a copy would
        # not, so a copy predicts on the plain path.
        return (_dropped, ())

    def problem(self, module):
        """Why ``module`` may no longer be predicted through the split, or None.

        Structural checks, cheap: the same module, ``forward`` and layers, no
        forward hook on it or any submodule (``torch.fx`` traced through the
        submodules it does not call as layers, so their hooks would not run)
        nor global ones, and the Python values the traced graph may have
        baked in (every submodule's plain attributes, an instance's
        ``forward``) as they were when it was traced.
        """
        if module is not self.module:
            return "net_.module_ was replaced after fit"
        if type(module).forward is not self.forward or "forward" in vars(module):
            return "the module's forward was changed after fit"
        for name, sub in module.named_modules():
            if sub._forward_hooks or sub._forward_pre_hooks:
                where = f"its submodule {name!r}" if name else "the module"
                return f"{where} has forward hooks"
        if _torch_module._global_forward_hooks or (
            _torch_module._global_forward_pre_hooks
        ):
            return "global forward hooks are registered"
        why = _cache.state_change(self.split.traced_state, _cache.python_state(module))
        if why is not None:
            return f"{why} after the network was traced at fit"
        for part in (self.split.stage, self.split.rest):
            for node in part.graph.nodes:
                if node.op not in ("call_module", "get_attr"):
                    continue
                try:
                    ours = _resolve(part, node.target)
                    theirs = _resolve(module, node.target)
                except AttributeError:
                    return f"{node.target} of the module was removed after fit"
                if ours is not theirs:
                    return f"{node.target} of the module was replaced after fit"
        return None


def _resolve(root, target):
    obj = root
    for name in target.split("."):
        obj = getattr(obj, name)
    return obj


def _eval_problem(split, module, probe, device):
    """Why the split may differ from ``module`` in evaluation mode, or None.

    ``fit`` traced the network in training mode; a ``forward`` that branches on
    ``self.training`` would make the split another network when predicting.
    Both run on ``probe`` in evaluation mode and must agree bit for bit.
    """
    with evaluating(module):
        X = to_tensor(probe, device=device)
        same = torch.equal(split.rest(split.stage(X)), module(X))
    if not same:
        return (
            "the split network's outputs differ from the module's in evaluation "
            "mode (a forward that depends on self.training?)"
        )
    return None


def _same(a, b):
    """Whether two outputs (tensors, or containers of them) are bit-identical."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b):
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and type(a) is type(b) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def _rows_problem(split, module, X, device):
    """Why the split may not stand for ``module`` on ``X``, or None.

    The proof at each prediction: the first rows of the call's own ``X``
    (at most :data:`_PROOF_ROWS`), as one batch, through the whole module and
    through the stage then the rest, in evaluation mode without gradients;
    the outputs must be bit-identical. The module's buffers, its modes and
    the random state are as before afterwards.
    """
    rows = to_tensor(_dense_rows(X, _PROOF_ROWS), device=device)
    device = torch.device(device)
    buffers = [(buf, buf.clone()) for buf in module.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with evaluating(module), torch.random.fork_rng(devices=devices):
            states = [torch.cuda.get_rng_state(d) for d in devices]
            state = torch.random.get_rng_state()
            whole = module(rows)
            torch.random.set_rng_state(state)  # both runs draw the same numbers
            for d, saved in zip(devices, states, strict=True):
                torch.cuda.set_rng_state(saved, d)
            through = split.rest(split.stage(rows))
            same = _same(through, whole)
    except Exception as exc:  # noqa: BLE001 (a failing proof: the plain path)
        return (
            "the split network fails on this call's first rows "
            f"({type(exc).__name__}: {exc})"
        )
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
    if not same:
        return (
            "the split network's outputs differ from the module's on this call's "
            "first rows (something forward reads changed after fit?)"
        )
    return None


def record(split, report, net, probe):
    """Return what prediction keeps of ``fit``'s frozen stage; fill ``report``.

    Parameters
    ----------
    split : FrozenStage, ViewedStage or None
        What ``fit`` trained through.
    report : dict
        ``frozen_cache_``; gets ``predict_outputs`` and ``predict_reason``
        (None until a prediction).
    net : skorch.NeuralNet
        The fitted net.
    probe : ndarray of shape (n_probe, ...)
        A few training samples, on which the split and the module must agree
        bit for bit in evaluation mode.

    Returns
    -------
    stage : PredictStage or None
    """
    report["predict_outputs"] = None
    report["predict_reason"] = None
    if not isinstance(split, _cache.FrozenStage):
        split = getattr(split, "stage", None)  # a ViewedStage's frozen stage
    if not isinstance(split, _cache.FrozenStage):
        return None
    digest = report.get("digest_seconds")
    compute = report.get("compute_seconds")
    if digest is not None and compute and compute > _TIMED and digest > compute:
        report["predict_reason"] = (
            f"the store's key cost more than the stage's pass at fit ({digest:.3g} "
            f"s against {compute:.3g} s)"
        )
        return None
    why = _eval_problem(split, net.module_, probe, net.device)
    if why is not None:
        report["predict_reason"] = why
        return None
    return PredictStage(split, net.module_)


def _why_not(estimator, net, X):
    """Why prediction of ``X`` takes the plain path, or None to use the store."""
    stage = getattr(estimator, "_predict_stage", None)
    if stage is None:
        report = getattr(estimator, "frozen_cache_", None) or {}
        return (
            report.get("predict_reason")
            or report.get("reason")
            or "fit did not cache a frozen stage"
        )
    if isinstance(stage, _Dropped):
        return stage.reason
    if _store.STORE.max_bytes == 0:
        return "the store is off (set_frozen_store_limit(0))"
    if _store.modes_active():
        return "a torch function or dispatch mode is active"
    why = stage.problem(net.module_)
    if why is not None:
        return why
    net_class = _step.trusted_class(net, estimator._net_class)
    why = _trust.data_path_problem(net, net_class)
    if why is not None:
        return why
    nbytes = stage.split.nbytes(X.shape[0])
    if nbytes > _store.STORE.max_bytes:
        return (
            f"the stage's outputs for {X.shape[0]} rows ({nbytes / 2**20:.1f} MiB) "
            f"exceed the store's bound ({_store.STORE.max_bytes / 2**20:.1f} MiB)"
        )
    return _rows_problem(stage.split, net.module_, X, net.device)


def _head_problem(split, head):
    """Why ``transform`` cannot read the head's input in the rest, or None."""
    if not head:
        return "head=None: no head input to read"
    layers = {n.target for n in split.rest.graph.nodes if n.op == "call_module"}
    missing = [name for name in head if name not in layers]
    if missing:
        return (
            f"the head's submodule {missing[0]!r} is not one layer the rest runs, "
            "so its input cannot be read there"
        )
    return None


@contextmanager
def rows(estimator, X, *, head=None):
    """Yield what the fitted net predicts from: ``X``, or its frozen stage's outputs.

    Parameters
    ----------
    estimator : _BaseTransfer
        A fitted estimator.
    X : ndarray or sparse matrix of shape (n_samples, ...)
        Validated samples.
    head : sequence of str, default=None
        For ``transform``: the head's submodule names, whose input is read
        by pre-hooks (:func:`sktransfer._features.head_input`). Each must be a
        layer the rest runs; the modes of the module's layers are then put
        back afterwards, as the plain path does, instead of left in
        evaluation mode.

    Yields
    ------
    rows : ndarray, sparse matrix or torch.Tensor
        ``X`` itself, with ``net_`` as it is (the plain path); or the frozen
        stage's outputs for ``X`` (from the store, or computed in evaluation
        mode and stored), with ``net_.module_`` the trainable rest inside the
        block and the whole module, in evaluation mode as skorch leaves it
        after predicting, afterwards. ``frozen_cache_["predict_outputs"]`` is
        ``"reused"``, ``"computed"`` or None (the plain path), and
        ``frozen_cache_["predict_reason"]`` says why the plain path.
    """
    net = estimator.net_
    report = getattr(estimator, "frozen_cache_", None)
    why = _why_not(estimator, net, X)
    if why is None and head is not None:
        why = _head_problem(estimator._predict_stage.split, head)
    if why is not None:
        if report is not None:
            report.update(predict_outputs=None, predict_reason=why)
        yield X
        return
    split = estimator._predict_stage.split
    seen = {}
    keep_on = _cache.cache_device(net.device, split.nbytes(X.shape[0]))
    Z = split.outputs(
        X,
        batch_size=predict_batch_size(net, X.shape[0]),
        device=net.device,
        keep_on=keep_on,
        report=seen,
    )
    report.update(predict_outputs=seen["outputs"], predict_reason=None)
    module = net.module_
    if head is not None:
        with modes_restored(module), split.training_rest(net):
            yield Z
        return
    try:
        with split.training_rest(net):
            yield Z
    finally:
        module.eval()  # skorch's predict leaves the whole module so
