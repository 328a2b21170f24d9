"""Building the skorch net of one phase, in named steps.

:func:`build_net` is what ``fit`` and ``fit_source`` call; each step is a free
function (as scikit-learn's ``_ridge.py`` keeps its algorithms apart from the
estimator that orchestrates them), and the order between them is fixed here,
in one place:

1. :func:`configure` — the template, made lean, with the estimator's settings;
2. :func:`initialize` — skorch's ``initialize``, lazy layers sized;
3. :func:`load_weights` — (target) shared weights from the pretrained ones,
   or fresh ones for ``pretrained=False``; the head re-initialised and resized;
4. :func:`check_network` — the network runs, its head runs, its outputs have
   the task's shape and the kind the criterion expects; then (target) the
   adapter, if any, injected into the shared layers
   (:func:`sktransfer._lora.apply`), every pretrained weight frozen;
5. :func:`prepare_target` — (target) frozen parameters, the unfreezing
   schedule, and the optimizer, built last so that it holds the parameters
   the net trains.
"""

from __future__ import annotations

from skorch import NeuralNet
from skorch.utils import to_tensor
from torch import nn
from torch.utils.data import DataLoader

from . import (
    _defaults,
    _finetune,
    _frozen,
    _guard,
    _layers,
    _lora,
    _outputs,
    _step,
    _stopping,
)
from ._common import _dense_rows
from ._data import ArrayLoader

# The name of the unfreezing schedule's callback in the fine-tuning net.
UNFREEZE_CALLBACK = "sktransfer_unfreeze"


def build_net(estimator, X, n_outputs, *, phase):
    """Build and initialise the skorch net for one phase, ready to train.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        Its parameters, its template (``net``) and its pretrained weights.
    X : ndarray of shape (n_samples, ...)
        The phase's samples; a few rows are run through the network.
    n_outputs : int
        The width of the network's output for this phase's task.
    phase : {"source", "target"}
        Source: the network as given, every parameter trainable, the head
        resized to the source's outputs. Target: shared weights loaded from
        the pretrained ones, head re-initialised and resized, ``frozen``
        parameters frozen.

    Returns
    -------
    net : skorch.NeuralNet
        The initialised net, its optimizer built.
    groups : tuple of (list, list) or None
        (target) The shared parameters and the head's; None for the source.

    Raises
    ------
    ValueError
        From any step: settings skorch refuses, a head that cannot be resized
        or never runs, outputs of the wrong shape or kind.
    """
    net = configure(estimator, X, n_outputs, phase=phase)
    initialize(net, X)
    module = net.module_
    head = _layers.resolve_head(module, estimator.head)
    frozen = _layers.match_parameters(
        module, _layers.check_patterns(estimator.frozen, "frozen")
    )
    if phase == "target":
        load_weights(estimator, net, head, n_outputs)
    resized = _layers.resize_head(module, head, n_outputs)
    check_network(estimator, net, X, head, n_outputs, phase=phase, resized=resized)
    if phase == "source":
        net.initialize_optimizer()
        return net, None
    adapted = _lora.apply(estimator, module, head, frozen)  # None: no adapter
    return net, prepare_target(
        estimator, net, frozen if adapted is None else adapted, head
    )


def configure(estimator, X, n_outputs, *, phase):
    """Return the estimator's template, made lean and set for ``phase``, unfitted."""
    net = _step.lean(estimator._template())
    params = {"verbose": int(estimator.verbose), **_defaults.overrides(estimator, net)}
    # The fast data path, unless the template brings its own iterators.
    for name in ("iterator_train", "iterator_valid"):
        if getattr(net, name) is DataLoader:
            params[name] = ArrayLoader
    if phase == "target":
        defaults = not isinstance(estimator.net, NeuralNet)
        params.update(_stopping.net_params(estimator, net, defaults))
    if phase == "source" and estimator.source_params:
        params.update(estimator.source_params)
    try:
        net.set_params(**params)
    except ValueError as exc:
        msg = f"Invalid source_params {estimator.source_params!r}: {exc}"
        raise ValueError(msg) from exc
    net.set_params(**estimator._module_sizes(net, X, n_outputs))
    return net


def initialize(net, X):
    """Initialise ``net`` (refusing ``compile=True``) and size its lazy layers."""
    _guard.refuse_compile(net)
    net.initialize()
    if _layers.has_lazy(net.module_):  # sized by a first forward, before transfer
        _layers.materialize(net.module_, to_tensor(X[:1], device=net.device))


def load_weights(estimator, net, head, n_outputs):
    """Give ``net.module_`` its target-phase starting weights; re-initialise ``head``.

    The shared layers get the pretrained weights (``pretrained=True`` and some
    exist), or fresh ones (``pretrained=False``: every layer with a
    ``reset_parameters`` is reset, and a warning names the tensors none
    covers).
    """
    module = net.module_
    pretrained = getattr(estimator, "_pretrained", None)
    if pretrained is not None and estimator.pretrained:
        if not head and pretrained.n_outputs not in (None, n_outputs):
            msg = (
                f"head=None transfers every weight, but the source task has "
                f"{pretrained.n_outputs} outputs and the target task "
                f"{n_outputs}. Name the head (head='auto' or a submodule) so "
                "that it is rebuilt for the target."
            )
            raise ValueError(msg)
        _layers.transfer_weights(module, pretrained.state_dict, skip=head)
    elif not estimator.pretrained and not isinstance(net.module, type):
        kept = _layers.reset_all(module)  # the instance's weights: unused
        _layers.warn_not_reset(kept, type(estimator).__name__)
    _layers.reset_head(module, head)


def check_network(estimator, net, X, head, n_outputs, *, phase, resized):
    """Raise a ValueError unless the network runs on ``X`` as the task needs.

    Runs one sample: the head must be called by ``forward`` and the output
    must have shape ``(n_outputs,)`` per sample; then 8 samples through
    :func:`sktransfer._outputs.check_probe` (the kind of output the criterion
    expects).
    """
    module = net.module_
    hint = (
        f"head={estimator.head!r} resolved to {list(head)}; sktransfer resizes the "
        "last nn.Linear layer of the head to the task's outputs"
        + (f" (here {resized!r})" if resized else "")
        + ". Name the head's submodules so that they end in the output layer."
    )
    try:
        with _layers.recording_calls(module, head) as called:
            shape = _layers.output_shape(
                module, to_tensor(_dense_rows(X, 1), device=net.device)
            )
    except ValueError as exc:
        if not resized:
            raise
        raise ValueError(f"{exc} {hint}") from exc
    _layers.check_head_runs(head, called, estimator.head)
    if shape != (n_outputs,):
        msg = (
            f"The network's output has shape {shape} per sample, but the "
            f"{phase} task needs ({n_outputs},). {hint}"
        )
        raise ValueError(msg)
    _outputs.check_probe(
        net,
        to_tensor(_dense_rows(X, 8), device=net.device),
        multilabel=getattr(estimator, "_multilabel_y", False),
    )


def prepare_target(estimator, net, frozen, head):
    """Freeze, schedule unfreezing and build the optimizer; return the groups.

    Returns the shared parameters and the head's, for L2-SP.
    """
    module = net.module_
    _frozen.freeze_for_fit(
        net,
        frozen,
        head,
        estimator.frozen,
        hold_norm=estimator.freeze_bn_stats,
        callbacks=(UNFREEZE_CALLBACK,),
        stacklevel=6,  # prepare_target, build_net, _build_net, fit, _fit_context
    )
    schedule = _finetune.check_schedule(estimator.unfreeze, module)
    if schedule:
        callback = _finetune.Unfreeze(schedule, module).initialize()
        net.callbacks_.append((UNFREEZE_CALLBACK, callback))
    shared, specific = split_parameters(module, head)
    _finetune.initialize_scaled_optimizer(
        net, shared, estimator.shared_lr_scale, decay=estimator.layer_decay, head=head
    )
    return shared, specific


def split_parameters(module, head):
    """Return the shared parameters of ``module`` and those of its ``head``."""
    shared, specific = [], []
    for name, param in module.named_parameters():
        (specific if _layers.is_under(name, head) else shared).append(param)
    return shared, specific


def is_factory(obj):
    """Whether ``obj`` is a callable that returns a module (not a class)."""
    return callable(obj) and not isinstance(obj, (type, nn.Module, NeuralNet))
