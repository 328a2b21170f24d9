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
  forward hooks of its own and none registered globally, and each layer and
  tensor the stage and the rest run is still the module's own (a replaced
  layer means the plain path);
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
from torch.nn.modules import module as _torch_module

from . import _cache, _step, _store, _trust
from ._layers import evaluating, modes_restored

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
        """Why ``module`` may no longer be predicted through the split, or None."""
        if module is not self.module:
            return "net_.module_ was replaced after fit"
        if type(module).forward is not self.forward or "forward" in vars(module):
            return "the module's forward was changed after fit"
        if module._forward_hooks or module._forward_pre_hooks:
            return "the module has forward hooks of its own"
        if _torch_module._global_forward_hooks or (
            _torch_module._global_forward_pre_hooks
        ):
            return "global forward hooks are registered"
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


def _batch_size(net, n_samples):
    size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
    return n_samples if size in (-1, None) else size


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
    return None


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
        batch_size=_batch_size(net, X.shape[0]),
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
