"""Building the skorch net of one phase, in named steps.

:func:`build_net` is what ``fit`` and ``fit_source`` call; each step is a free
function (as scikit-learn's ``_ridge.py`` keeps its algorithms apart from the
estimator that orchestrates them), and the order between them is fixed here,
in one place:

1. :func:`configure` — the template, made lean, with the estimator's settings
   (which win over the template's other names for them,
   :func:`one_value_per_setting`);
2. :func:`initialize` — skorch's ``initialize``, the dtype the network takes
   its samples in (:func:`sktransfer._fit._inputs.input_dtype`), lazy layers sized;
3. :func:`load_weights` — (target) shared weights from the pretrained ones,
   or fresh ones for ``pretrained=False``; the head resized, then
   re-initialised by :func:`init_head` under a seed of its own;
4. :func:`check_network` — the network runs, its head runs, its outputs have
   the task's shape and the kind the criterion expects, all checked on the
   first training batch of the user's rows (:func:`probe_rows`) in training
   mode, without side effects; then (target) the adapter, if any, injected
   into the shared layers (:func:`sktransfer._torch._lora.apply`), every pretrained
   weight frozen;
5. :func:`prepare_target` — (target) frozen parameters, the unfreezing
   schedule (a warning for each fine-tuning setting that cannot act,
   :func:`warn_idle_settings`), and the optimizer, built last so that it
   holds the parameters the net trains.
"""

from __future__ import annotations

import inspect

import torch
from skorch import NeuralNet
from skorch.utils import to_tensor
from torch import nn
from torch.utils.data import DataLoader

from .._common import (
    _PROBE_ROWS,
    _dense_rows,
    _reseed,
    install_callback,
    warn_at_user,
)
from .._skorch import _finetune, _frozen, _step
from .._skorch._data import ArrayLoader
from .._skorch._finetune import UNFREEZE_CALLBACK
from .._torch import _hf, _layers, _lora, _probe, _transfer
from . import _guard, _inputs, _outputs, _settings, _stopping

# skorch settings with other names that skorch reads first, and their defaults.
SETTING_ALIASES = {
    "lr": ("optimizer__lr",),
    "batch_size": ("iterator_train__batch_size", "iterator_valid__batch_size"),
}
_SKORCH_DEFAULTS = {
    name: inspect.signature(NeuralNet.__init__).parameters[name].default
    for name in SETTING_ALIASES
}


def build_net(estimator, X, n_outputs, *, phase):
    """Build and initialise the skorch net for one phase, ready to train.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        Its parameters, its template (``net``) and its pretrained weights.
    X : ndarray or sparse matrix of shape (n_samples, ...)
        The phase's samples (or their first rows), as the user gave them; the
        first training batch of them is run through the network, in the
        dtype it takes them in.
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
    rows = initialize(net, X)
    module = net.module_
    head = _layers.resolve_head(module, estimator.head)
    frozen = _layers.match_parameters(
        module, _layers.check_patterns(estimator.frozen, "frozen"), layers=True
    )
    hf_base = isinstance(module, _hf.TransformerNet) and not module.sequence_classifier
    if not head and hf_base:
        # head=None keeps the whole network, but a base model's head is the
        # package's own (two outputs when built): it has the task's width.
        _transfer.resize_head(module, ("head",), n_outputs)
    if phase == "target":
        load_weights(estimator, net, head, n_outputs)
    resized = _transfer.resize_head(module, head, n_outputs)
    if phase == "target":
        init_head(estimator, module, head)
    check_network(estimator, net, rows, head, n_outputs, phase=phase, resized=resized)
    if phase == "source":
        net.initialize_optimizer()
        return net, None
    adapted = _lora.apply(estimator, module, head, frozen)  # None: no adapter
    groups = prepare_target(
        estimator, net, frozen if adapted is None else adapted, head
    )
    # Training draws the same numbers whatever building drew (see init_head).
    _reseed(estimator.random_state, "train")
    return net, groups


def configure(estimator, X, n_outputs, *, phase):
    """Return the estimator's template, made lean and set for ``phase``, unfitted."""
    net = _step.lean(estimator._template())
    params = {"verbose": int(estimator.verbose), **_settings.overrides(estimator, net)}
    # The fast data path, unless the template brings its own iterators.
    for name in ("iterator_train", "iterator_valid"):
        if getattr(net, name) is DataLoader:
            params[name] = ArrayLoader
    if phase == "target":
        defaults = not isinstance(estimator.net, NeuralNet)
        params.update(_stopping.net_params(estimator, net, defaults))
    if phase == "source" and estimator.source_params:
        params.update(estimator.source_params)
    params.update(one_value_per_setting(estimator, net, params, phase=phase))
    try:
        net.set_params(**params)
    except ValueError as exc:
        msg = f"Invalid source_params {estimator.source_params!r}: {exc}"
        raise ValueError(msg) from exc
    net.set_params(**estimator._module_sizes(net, X, n_outputs))
    return net


def probe_rows(net, X):
    """Return the rows of ``X`` that the checks run the network on.

    The first training batch: the first ``batch_size`` rows of the training
    iterator, at most 64, and at least two (no training batch of skorch's
    has one sample unless the user asks for it), dense.
    """
    n_samples = X.shape[0]
    size = net.get_params_for("iterator_train").get("batch_size", net.batch_size)
    size = n_samples if size in (-1, None) else size
    return _dense_rows(X, min(n_samples, max(2, min(size, _PROBE_ROWS))))


def one_value_per_setting(estimator, net, params, *, phase):
    """Return the template's other names of a setting, set to the one that wins.

    skorch reads a learning rate from ``optimizer__lr`` before ``lr``, and a
    batch size from ``iterator_train__batch_size`` / ``iterator_valid__batch_size``
    before ``batch_size`` (``SETTING_ALIASES``). The estimator's ``lr`` and
    ``batch_size`` (both phases) and ``source_params`` (pretraining) are the
    settings they document, so where ``params`` sets one of them and the
    template sets another name of it to another value, that name gets the
    same value, with a warning naming both; an alias that ``source_params``
    sets itself is left as given. A template that sets both names itself (not
    through the estimator) keeps skorch's rule, with a warning naming both.
    """
    given = net.get_params(deep=False)
    source = estimator.source_params if phase == "source" else None
    source = source or {}
    what = "pretraining" if phase == "source" else "fine-tuning"
    changed = {}
    for name, aliases in SETTING_ALIASES.items():
        for alias in aliases:
            if alias not in given or alias in params:
                continue
            if name in params:
                value = params[name]
                if _guard._same(given[alias], value):
                    continue
                who = (
                    f"source_params={{{name!r}: {value!r}}}"
                    if name in source
                    else f"{type(estimator).__name__}({name}={value!r})"
                )
                msg = (
                    f"The net template sets {alias}={given[alias]!r}, which skorch "
                    f"uses before {name}; {who} is the setting for {what}, so "
                    f"{alias} is set to {value!r} too. Set {name} in one place."
                )
                changed[alias] = value
            elif not _guard._same(given[name], _SKORCH_DEFAULTS[name]) and not (
                _guard._same(given[name], given[alias])
            ):
                msg = (
                    f"The net template sets both {name}={given[name]!r} and "
                    f"{alias}={given[alias]!r}; skorch trains at {alias}="
                    f"{given[alias]!r} for {what}. Set {name} in one place (the "
                    f"estimator's {name} overrides both)."
                )
            else:
                continue
            warn_at_user(msg, UserWarning)
    return changed


def initialize(net, X):
    """Initialise ``net`` (refusing ``compile=True``) and size its lazy layers.

    Returns the probe batch (:func:`probe_rows`) as a tensor on the net's
    device, in the dtype the network takes (:func:`_inputs.input_dtype`).
    """
    _guard.refuse_compile(net)
    net.initialize()
    dtype = _inputs.input_dtype(net.module_, X.dtype)
    rows = probe_rows(net, X)
    rows = to_tensor(_inputs.rows_as_input(rows, dtype), device=net.device)
    if _probe.has_lazy(net.module_):  # sized by a first forward, before transfer
        try:
            _probe.materialize(net.module_, rows)
        except Exception as exc:  # noqa: BLE001 (any error of the user's module)
            raise ValueError(_probe.failed_on(net.module_, rows, exc)) from exc
    return rows


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
        _transfer.transfer_weights(module, pretrained.state_dict, skip=head)
    elif not estimator.pretrained and not isinstance(net.module, type):
        kept = _transfer.reset_all(module)  # the instance's weights: unused
        _transfer.warn_not_reset(kept, type(estimator).__name__)


def init_head(estimator, module, head):
    """Give the head fresh weights that depend on ``random_state`` and its shape only.

    The same pretrained weights reach the network by several routes
    (``fit_source``, a weight file, a state dict, a module instance as
    ``net``), and building the network draws a different amount of random
    numbers on each (a module class initialises every layer, an instance
    none; a head of the source's width is resized). Each head layer's
    ``reset_parameters`` therefore runs under its own seed drawn from
    ``random_state``, so that a seeded fit is bit-identical by every route.
    """
    with torch.random.fork_rng(devices=[]):
        _reseed(estimator.random_state, "head")
        _transfer.reset_head(module, head)


def check_network(estimator, net, rows, head, n_outputs, *, phase, resized):
    """Raise a ValueError unless the network runs on ``rows`` as the task needs.

    Runs the probe batch ``rows`` (the first training batch, on the net's
    device) once, as a training step would but without side effects
    (:func:`sktransfer._torch._probe.training_conditions`): the head must be called
    by ``forward``, the output must have shape ``(n_outputs,)`` per sample,
    and of the kind the criterion expects
    (:func:`sktransfer._fit._outputs.check_probe`). An error of the module itself
    is reported with its own message, chained.
    """
    module = net.module_
    try:
        with _probe.recording_calls(module, head) as called:
            out = _probe.run_in_training_conditions(module, rows, net.device)
    except ValueError as exc:
        if not resized:
            raise
        msg = (
            f"{exc} Before this call, head={estimator.head!r} resolved to "
            f"{list(head)} and sktransfer resized its last nn.Linear, {resized!r}, "
            f"to the task's {n_outputs} outputs; if that is not the output layer, "
            "name the head's submodules with head=..."
        )
        raise ValueError(msg) from exc.__cause__
    _probe.check_head_runs(head, called, estimator.head)
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        # Auxiliary outputs in training mode (torchvision's InceptionOutputs),
        # which a get_loss of the user's takes; the first is the prediction.
        out = out[0]
    shape = _probe.per_sample_shape(out)
    if shape == () and n_outputs == 1:
        msg = (
            "The network's output has shape () per sample (one number, as after "
            "a .squeeze() at the end of forward), but the transfer estimators "
            f"train on targets of shape (n_samples, {n_outputs}) and outputs of "
            f"shape (batch, {n_outputs}): a loss would broadcast (batch,) against "
            f"(batch, {n_outputs}). End forward with .squeeze(-1) removed (or "
            "x.view(-1, 1)), so that each sample has one output column."
        )
        raise ValueError(msg)
    if shape != (n_outputs,):
        hint = (
            f"head={estimator.head!r} resolved to {list(head)}; sktransfer resizes "
            "the last nn.Linear layer of the head to the task's outputs"
            + (f" (here {resized!r})" if resized else "")
            + ". Name the head's submodules so that they end in the output layer."
        )
        msg = (
            f"The network's output has shape {shape} per sample, but the "
            f"{phase} task needs ({n_outputs},). {hint}"
        )
        raise ValueError(msg)
    _outputs.check_probe(
        net,
        rows,
        multilabel=getattr(estimator, "_multilabel_y", False),
        outputs=out,
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
        layers=_layers.match_layers(
            module, _layers.check_patterns(estimator.frozen, "frozen")
        ),
        hold_norm=estimator.freeze_bn_stats,
    )
    schedule = _finetune.check_schedule(estimator.unfreeze, module)
    if schedule:
        callback = _finetune.Unfreeze(schedule, module)
        _frozen.on_exit(install_callback(net, UNFREEZE_CALLBACK, callback))
    shared, specific = split_parameters(module, head)
    warn_idle_settings(estimator, net, shared, schedule)
    _finetune.initialize_scaled_optimizer(
        net, shared, estimator.shared_lr_scale, decay=estimator.layer_decay, head=head
    )
    return shared, specific


def warn_idle_settings(estimator, net, shared, schedule):
    """Warn about each fine-tuning setting that cannot act on this fit.

    ``l2sp``, ``shared_lr_scale`` and ``layer_decay`` act on the trainable
    shared parameters (now, or once ``unfreeze`` releases them): with every
    shared parameter frozen they change nothing. An ``unfreeze`` step after
    ``max_epochs`` never runs (not judged for ``partial_fit``, whose epochs
    add up over the calls).
    """
    name = type(estimator).__name__
    partial = getattr(estimator, "_partial", None) is not None
    later = {
        n
        for epoch, names in schedule
        if partial or epoch <= net.max_epochs
        for n in names
    }
    named = dict(net.module_.named_parameters())
    trainable = [
        param
        for param in shared
        if param.requires_grad or any(named.get(n) is param for n in later)
    ]
    if not trainable:
        why = (
            "no shared parameter trains: every one is frozen"
            + ("" if shared else " (the network has none outside the head)")
            + f" (frozen={estimator.frozen!r}), so it changes nothing"
        )
        settings = {
            "l2sp": (
                estimator.l2sp,
                0.0,
                "pulls the shared weights toward the pretrained ones",
            ),
            "shared_lr_scale": (
                estimator.shared_lr_scale,
                1.0,
                "scales the shared parameters' learning rate",
            ),
            "layer_decay": (
                estimator.layer_decay,
                1.0,
                "decays the shared layers' learning rates",
            ),
        }
        for setting, (value, neutral, does) in settings.items():
            if value != neutral:
                msg = (
                    f"{name}({setting}={value!r}) {does}, but {why}. Unfreeze "
                    f"some shared layers or leave {setting} at {neutral!r}."
                )
                warn_at_user(msg, UserWarning)
    if not partial:
        for epoch, _ in schedule:
            if epoch > net.max_epochs:
                msg = (
                    f"{name}(unfreeze=...) unfreezes at epoch {epoch}, after the "
                    f"last one (max_epochs={net.max_epochs}), so that step never "
                    "runs. Give it an earlier epoch or raise max_epochs."
                )
                warn_at_user(msg, UserWarning)


def split_parameters(module, head):
    """Return the shared parameters of ``module`` and those of its ``head``."""
    shared, specific = [], []
    for name, param in module.named_parameters():
        (specific if _layers.is_under(name, head) else shared).append(param)
    return shared, specific


def is_factory(obj):
    """Whether ``obj`` is a callable that returns a module (not a class)."""
    return callable(obj) and not isinstance(obj, (type, nn.Module, NeuralNet))
