"""Pure functions over torch modules: frozen specs, heads and weight transfer.

Nothing here trains or knows about estimators; every function takes a module
(and plain data) and is unit-tested on its own.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase

import torch
from skorch.utils import freeze_parameter
from torch import nn

from .._compat import _NormBase

__all__ = [
    "check_patterns",
    "hold_frozen_layers",
    "hold_frozen_norm_layers",
    "is_under",
    "match_parameters",
    "output_shape",
    "reset_head",
    "resize_head",
    "resolve_head",
    "freeze",
    "transfer_weights",
]

_MAX_LISTED = 12

# Layers whose input is integer indices: a network holding one takes integer
# (and bool) X as int64, as torch.nn.functional.embedding needs.
INDEX_LAYERS = (nn.Embedding, nn.EmbeddingBag)


def _listing(names: Sequence[str]) -> str:
    """Return ``names`` for an error message, shortened when there are many."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _nearest(name: str, names: Sequence[str]) -> str:
    """Return a ' Did you mean ...?' hint with the names closest to ``name``."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" Did you mean {_listing(close)}?" if close else ""


def check_patterns(spec: object, param: str) -> tuple[str, ...]:
    """Return a glob spec (a string or a sequence of strings) as a tuple.

    Parameters
    ----------
    spec : str or sequence of str
        The value the user gave.
    param : str
        The parameter's name, used in error messages.

    Returns
    -------
    patterns : tuple of str
        ``(spec,)`` for a string, else the strings of the sequence.

    Raises
    ------
    TypeError
        If ``spec`` is not a string or a list/tuple of strings.
    """
    if isinstance(spec, str):
        return (spec,)
    if isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        return tuple(spec)
    msg = (
        f"{param} must be a string or a list/tuple of strings (glob patterns over "
        f"parameter names), got {spec!r}."
    )
    raise TypeError(msg)


def match_parameters(
    module: nn.Module,
    patterns: Iterable[str],
    *,
    param: str = "frozen",
    layers: bool = False,
) -> list[str]:
    """Return the names of ``module``'s parameters matching any glob pattern.

    Names are those of ``module.named_parameters()``, e.g. ``"features.0.weight"``.
    Patterns use :func:`fnmatch.fnmatchcase` (``*`` also matches dots).

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    patterns : iterable of str
        Glob patterns, e.g. ``"features.*"``.
    param : str, default="frozen"
        The estimator parameter the patterns come from, for error messages.
    layers : bool, default=False
        Patterns may also name submodules (``module.named_modules()``, e.g.
        ``"features"`` or ``"0"``): a submodule matched stands for all its
        parameters (none, for a layer without parameters such as
        ``BatchNorm1d(affine=False)``; :func:`match_layers` gives the layers).

    Returns
    -------
    names : list of str
        Matching parameter names in the module's order.

    Raises
    ------
    ValueError
        If a pattern matches no parameter (nor, with ``layers=True``, any
        submodule); the message lists the nearest names.
    """
    names = [name for name, _ in module.named_parameters()]
    submodules = [name for name, _ in module.named_modules() if name] if layers else []
    matched: set[str] = set()
    for pattern in patterns:
        hits = {name for name in names if fnmatchcase(name, pattern)}
        named = [name for name in submodules if fnmatchcase(name, pattern)]
        hits |= {name for name in names if is_under(name, named)}
        if not hits and not named:
            what = "parameter or submodule" if layers else "parameter"
            msg = (
                f"{param} pattern {pattern!r} matches no {what} of "
                f"{type(module).__name__}.{_nearest(pattern, names + submodules)} "
                f"Parameter names are: {_listing(names)}."
                + (f" Submodules are: {_listing(submodules)}." if layers else "")
            )
            raise ValueError(msg)
        matched |= hits
    return [name for name in names if name in matched]


def match_layers(module: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Return the names of ``module``'s submodules matching any glob pattern.

    The root module (name ``""``) is never matched.
    """
    patterns = tuple(patterns)
    return [
        name
        for name, _ in module.named_modules()
        if name and any(fnmatchcase(name, pattern) for pattern in patterns)
    ]


def resolve_head(
    module: nn.Module, head: str | Sequence[str] | None
) -> tuple[str, ...]:
    """Return the names of the submodules that form the task-specific head.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    head : "auto", str, sequence of str or None
        ``"auto"`` picks the output layer by the conventions of torchvision and
        timm (``fc``, ``classifier``, ``head``; see
        :func:`sktransfer._torch._architectures.auto_head`), else the last
        ``nn.Linear`` in ``module.named_modules()`` order; a string or
        sequence of strings names submodules; ``None`` (or an empty sequence)
        means the network has no head: every weight is shared.

    Returns
    -------
    names : tuple of str
        Submodule names, in the order given.

    Raises
    ------
    ValueError
        If a name is not a submodule, or ``"auto"`` finds no ``nn.Linear``.
    """
    if head is None:
        return ()
    modules = dict(module.named_modules())
    if head == "auto":
        from ._architectures import auto_head

        found = auto_head(module)
        if not found:
            msg = (
                f"head='auto' found no nn.Linear layer inside {type(module).__name__} "
                "to use as the head. Name the head's submodule(s) with head=..., "
                "or pass head=None to transfer every weight. Submodules are: "
                f"{_listing([n for n in modules if n])}."
            )
            raise ValueError(msg)
        return (found,)
    names = check_patterns(head, "head")
    for name in names:
        if name == "" or name not in modules:
            candidates = [n for n in modules if n]
            msg = (
                f"head={name!r} is not a submodule of {type(module).__name__}."
                f"{_nearest(name, candidates)} Submodules are: {_listing(candidates)}."
            )
            raise ValueError(msg)
    return names


def takes_indices(module: nn.Module) -> bool:
    """Whether ``module`` holds a layer that takes integer indices as input."""
    return any(isinstance(sub, INDEX_LAYERS) for sub in module.modules())


def is_under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether the state key ``key`` belongs to one of the submodules ``prefixes``."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def transfer_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], skip: Sequence[str] = ()
) -> list[str]:
    """Copy the shared weights (parameters and buffers) from ``state`` into ``module``.

    Every entry of ``module.state_dict()`` that is not under a submodule named in
    ``skip`` must be present in ``state`` with the same shape. Entries of
    ``state`` the module does not have (the source's head) are ignored.

    Parameters
    ----------
    module : torch.nn.Module
        The network to load into; modified in place.
    state : mapping of str to torch.Tensor
        The source weights, e.g. a ``state_dict()``.
    skip : sequence of str, default=()
        Submodule names (the head) whose weights are not transferred.

    Returns
    -------
    keys : list of str
        The state keys copied.

    Raises
    ------
    ValueError
        Naming every missing entry and every shape mismatch, before anything is
        copied.
    """
    target = module.state_dict()
    keys = check_weights(target, state, skip)
    with torch.no_grad():
        for key in keys:
            target[key].copy_(state[key])
    return keys


def check_weights(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    skip: Sequence[str] = (),
) -> list[str]:
    """Check that ``state`` holds every entry of ``target`` outside ``skip``.

    Returns the keys to copy; raises a ValueError naming every missing entry
    and every shape mismatch (expected and found shape).
    """
    keys = [key for key in target if not is_under(key, skip)]
    problems = []
    for key in keys:
        if key not in state:
            problems.append(f"{key!r} is missing from the source weights")
        elif tuple(state[key].shape) != tuple(target[key].shape):
            problems.append(
                f"{key!r} has shape {tuple(target[key].shape)} in the network but "
                f"{tuple(state[key].shape)} in the source weights"
            )
    if problems:
        msg = (
            "The source weights do not fit the network: "
            + "; ".join(problems)
            + ". Shared layers must have the same names and shapes in the source "
            "and the target network; layers listed in head are exempt."
            + _prefix_hint(keys, state)
        )
        raise ValueError(msg)
    return keys


def _prefix_hint(keys, state):
    """Say how to strip a prefix the source names carry (``module.``, ``model.``)."""
    missing = [key for key in keys if key not in state]
    if not missing:
        return ""
    for name in state:
        if name.endswith("." + missing[0]):
            prefix = name[: -len(missing[0])]
            if all(prefix + key in state for key in missing):
                return (
                    f" The source names carry the prefix {prefix!r} (as "
                    "DataParallel or a training framework adds); strip it: "
                    f"{{k.removeprefix({prefix!r}): v for k, v in state.items()}}."
                )
    return ""


def reset_all(module: nn.Module) -> list[str]:
    """Re-initialise every layer of ``module`` that has ``reset_parameters``.

    Returns
    -------
    kept : list of str
        The parameters and buffers that no ``reset_parameters`` covers (held
        directly by a module that has none, such as a ViT's ``pos_embed`` or a
        custom buffer): they keep their values.
    """
    kept = []
    for name, sub in module.named_modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        prefix = f"{name}." if name else ""
        kept += [prefix + n for n, _ in sub.named_parameters(recurse=False)]
        kept += [prefix + n for n, _ in sub.named_buffers(recurse=False)]
    return kept


def warn_not_reset(kept: Sequence[str], owner: str) -> None:
    """Warn that ``pretrained=False`` leaves the tensors ``kept`` as they were."""
    if not kept:
        return
    msg = (
        f"pretrained=False re-initialised the network's layers with their "
        f"reset_parameters(), but {len(kept)} tensor(s) belong to modules without "
        f"one and keep the values the module instance came with: "
        f"{_listing(list(kept))}. To train from scratch, pass the module class "
        f"(or a factory that builds fresh weights) as net of the {owner}."
    )
    warnings.warn(msg, UserWarning, stacklevel=2)


def reset_head(module: nn.Module, head: Sequence[str]) -> None:
    """Re-initialise the head's layers with their own ``reset_parameters``.

    Parameters
    ----------
    module : torch.nn.Module
        The network; modified in place.
    head : sequence of str
        Submodule names, as returned by :func:`resolve_head`.
    """
    for name in head:
        for sub in module.get_submodule(name).modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def resize_head(module: nn.Module, head: Sequence[str], n_outputs: int) -> str | None:
    """Give the head's last ``nn.Linear`` layer ``n_outputs`` outputs.

    The last ``nn.Linear`` among the head's submodules (in the order given, then
    module order) is replaced by a freshly initialised one with the same input
    size, bias, device and dtype when its output size differs from ``n_outputs``.

    Parameters
    ----------
    module : torch.nn.Module
        The network; modified in place.
    head : sequence of str
        Submodule names, as returned by :func:`resolve_head`.
    n_outputs : int
        The number of outputs the task needs.

    Returns
    -------
    name : str or None
        The name of the replaced layer, or ``None`` if nothing changed.
    """
    last = None
    for name in head:
        for sub_name, sub in module.get_submodule(name).named_modules():
            if isinstance(sub, nn.Linear):
                last = (f"{name}.{sub_name}" if sub_name else name, sub)
    if last is None or last[1].out_features == n_outputs:
        return None
    name, old = last
    new = nn.Linear(
        old.in_features,
        n_outputs,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)
    return name


def freeze(module: nn.Module, names: Iterable[str]) -> None:
    """Stop gradient updates of the named parameters (``requires_grad=False``)."""
    params = dict(module.named_parameters())
    for name in names:
        freeze_parameter(params[name])


def _hold_eval(norm: nn.Module, args: tuple) -> None:
    """Forward pre-hook: run a frozen normalisation layer in evaluation mode."""
    if norm.training:
        norm.train(False)


def is_held(layer: nn.Module) -> bool:
    """Whether ``hold_frozen_norm_layers`` holds ``layer`` in evaluation mode."""
    return _hold_eval in layer._forward_pre_hooks.values()


def hold_frozen_norm_layers(
    module: nn.Module, frozen: Iterable[str], layers: Sequence[str] = ()
) -> list[str]:
    """Keep the running statistics of fully frozen normalisation layers fixed.

    skorch puts the whole network in training mode before every batch, where a
    BatchNorm layer normalises with batch statistics and updates its running
    mean and variance even when its affine parameters are frozen. For every
    normalisation layer with running statistics
    (``torch.nn.modules.batchnorm._NormBase`` with ``track_running_stats``:
    BatchNorm1d/2d/3d, their lazy and synchronised forms, InstanceNorm with
    ``track_running_stats=True``) whose parameters are all in ``frozen``, this
    registers a forward pre-hook that switches the layer to evaluation mode,
    as Keras does for frozen layers. A layer without parameters
    (``affine=False``) counts as frozen when every parameter of its nearest
    enclosing module that has parameters is frozen (never when that is the
    whole network, which holds the trainable head), or when it is one of the
    submodules ``layers`` named in ``frozen``, or inside one (a
    parameter-free normalisation layer at the top of the network).

    The hooks are training-time state: :func:`release_norm_layers` with
    ``every=True`` removes them all.

    Parameters
    ----------
    module : torch.nn.Module
        The network; hooks are registered in place.
    frozen : iterable of str
        Names of the frozen parameters.
    layers : sequence of str, default=()
        Submodules named by ``frozen`` patterns (:func:`match_layers`).

    Returns
    -------
    names : list of str
        The layers held in evaluation mode.
    """
    frozen = set(frozen)
    all_params = [name for name, _ in module.named_parameters()]
    held = []
    for name, sub in _norm_layers(module):
        params = _governing_params(module, name, sub, all_params)
        if params:
            if not all(p in frozen for p in params):
                continue
        elif not is_under(name, layers):
            continue
        if not is_held(sub):
            sub.register_forward_pre_hook(_hold_eval)
        held.append(name)
    return held


def hold_frozen_layers(
    module: nn.Module, frozen: Iterable[str], layers: Sequence[str] = ()
) -> list[str]:
    """Run every fully frozen layer in evaluation mode: frozen means feature extraction.

    As the Keras transfer-learning guide calls ``base_model(x, training=False)``,
    and as timm's ``forward_features`` and Hugging Face feature extraction run
    a backbone: a frozen block computes the same while fine-tuning as while
    predicting, with dropout and stochastic depth off and its normalisation
    layers on their running statistics. Every submodule whose parameters are
    all in ``frozen`` gets the forward pre-hook of
    :func:`hold_frozen_norm_layers`, and so does every submodule without
    parameters whose nearest enclosing module with parameters is frozen (never
    when that is the whole network, which holds the trainable head): a dropout
    between the frozen body and the head stays in training mode, with the
    trained part. :func:`release_norm_layers` with ``every=True`` removes the
    hooks.

    Parameters
    ----------
    module : torch.nn.Module
        The network; hooks are registered in place.
    frozen : iterable of str
        Names of the frozen parameters.
    layers : sequence of str, default=()
        Submodules named by ``frozen`` patterns (:func:`match_layers`): held
        with everything inside them, even without parameters (a
        parameter-free normalisation layer at the top of the network).

    Returns
    -------
    names : list of str
        The outermost held submodules (their own submodules are held too).
    """
    frozen = set(frozen)
    all_params = [name for name, _ in module.named_parameters()]
    held = []
    for name, sub in module.named_modules():
        if not name or not (
            is_under(name, layers) or _all_frozen(module, name, sub, frozen, all_params)
        ):
            continue
        if not is_held(sub):
            sub.register_forward_pre_hook(_hold_eval)
        if not any(is_under(name, [outer]) for outer in held):
            held.append(name)
    return held


def release_norm_layers(module: nn.Module, *, every: bool = False) -> list[str]:
    """Let held normalisation layers train again.

    The inverse of :func:`hold_frozen_norm_layers` and
    :func:`hold_frozen_layers`. By default, after
    parameters were unfrozen: a held layer whose parameters (or, without any,
    whose enclosing block's parameters) are no longer all frozen
    (``requires_grad=False``) loses its hook. With ``every=True``, every held
    layer does (the end of ``fit``). A released layer follows the network's
    mode again.

    Parameters
    ----------
    module : torch.nn.Module
        The network; hooks are removed in place.
    every : bool, default=False
        Release every held layer, frozen or not.

    Returns
    -------
    names : list of str
        The layers released.
    """
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    all_params = [name for name, _ in module.named_parameters()]
    released = []
    for name, sub in module.named_modules():
        if not is_held(sub):
            continue
        params = _governing_params(module, name, sub, all_params)
        # A layer that no parameter governs was held by name: until fit ends.
        if every or (params and not all(p in frozen for p in params)):
            hooks = sub._forward_pre_hooks
            for key in [k for k, hook in hooks.items() if hook is _hold_eval]:
                del hooks[key]
            sub.train(module.training)
            released.append(name)
    return released


def _norm_layers(module):
    """BatchNorm-like layers that keep running statistics, with their names."""
    for name, sub in module.named_modules():
        if isinstance(sub, _NormBase) and sub.track_running_stats:
            yield name, sub


def _governing_params(module, name, layer, all_params):
    """Return the parameters whose being frozen makes a normalisation layer frozen.

    Its own; without any, those of its nearest enclosing block that has
    some; none for a parameter-free layer outside any such block (at the top
    of the network), which only a ``frozen`` pattern naming it holds.
    """
    prefix = f"{name}." if name else ""
    params = [prefix + p for p, _ in layer.named_parameters()]
    parent = name
    while not params and parent:
        # No parameters: judge by the nearest enclosing block that has some.
        parent = parent.rpartition(".")[0]
        if parent and any(True for _ in module.get_submodule(parent).parameters()):
            params = [p for p in all_params if is_under(p, [parent])]
    return params


def _all_frozen(module, name, layer, frozen, all_params):
    """Whether a layer counts as frozen: its governing parameters all are."""
    params = _governing_params(module, name, layer, all_params)
    return bool(params) and all(p in frozen for p in params)


@contextmanager
def modes_restored(module: nn.Module):
    """Put each submodule of ``module`` back in its mode when the block ends."""
    modes = [(sub, sub.training) for sub in module.modules()]
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


@contextmanager
def evaluating(module: nn.Module):
    """Run ``module`` in evaluation mode without gradients inside the block.

    The modes of its submodules are put back afterwards, so probing a network
    changes neither its BatchNorm statistics nor its training state.
    """
    with modes_restored(module), torch.no_grad():
        module.eval()
        yield module


@contextmanager
def recording_calls(module: nn.Module, names: Sequence[str]):
    """Record which of the submodules ``names`` run inside the block.

    Yields the set of names whose forward ran; the hooks are removed when the
    block ends.
    """
    called: set[str] = set()
    handles = [
        module.get_submodule(name).register_forward_hook(
            lambda *_, name=name: called.add(name)
        )
        for name in names
    ]
    try:
        yield called
    finally:
        for handle in handles:
            handle.remove()


def check_head_runs(head: Sequence[str], called: set, spec: object) -> None:
    """Raise a ValueError when no head submodule runs in ``forward``.

    A head that ``forward`` does not call would be rebuilt and trained for
    nothing, while the layer that really makes the output kept its source
    weights.
    """
    idle = [name for name in head if name not in called]
    # One head part may run only while training (an auxiliary classifier); a
    # head none of whose parts runs is certainly not the output.
    if head and len(idle) == len(head):
        msg = (
            f"head={spec!r} resolved to {list(head)}, but forward never calls "
            f"{_listing(idle)}: rebuilding it would leave the layer that makes "
            "the output with its source weights. Name the submodule(s) that "
            "forward ends in with head=..."
        )
        raise ValueError(msg)


def has_lazy(module: nn.Module) -> bool:
    """Whether ``module`` has lazy layers whose parameters are not sized yet."""
    return any(
        isinstance(t, nn.parameter.UninitializedTensorMixin)
        for t in (*module.parameters(), *module.buffers())
    )


def materialize(module: nn.Module, X: torch.Tensor) -> None:
    """Size the lazy layers of ``module`` with one forward pass on ``X``.

    Lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``, ``nn.LazyBatchNorm2d``,
    ...) create their parameters on their first forward; weights can only be
    copied into them after it. The pass runs on the whole batch ``X`` (a few
    training rows) in evaluation mode, without gradients, the modes put back.
    """
    with evaluating(module):
        module(X)


@contextmanager
def training_conditions(module: nn.Module, device=None):
    """Run ``module`` as a training step does, but without leaving a trace.

    Inside the block the module is in training mode (as skorch puts it before
    every training batch) and gradients are off; when the block ends, every
    buffer (BatchNorm's running statistics and batch count) has its value
    back, each submodule its mode, and torch's random number generators
    (CPU, and ``device`` if it is an accelerator) their state, so that a check run
    here changes neither the network nor the random numbers training draws.
    """
    saved = {
        name: buf.detach().clone()
        for name, buf in module.named_buffers()
        if not isinstance(buf, nn.parameter.UninitializedTensorMixin)
    }
    if device is None:  # where the module's weights are
        device = next((t.device for t in module.parameters()), "cpu")
    device = torch.device(device)
    accelerator = device.type if device.type != "cpu" else "cuda"
    forked = [device.index or 0] if device.type != "cpu" else []
    try:
        with modes_restored(module), torch.no_grad():
            with torch.random.fork_rng(devices=forked, device_type=accelerator):
                module.train()
                yield module
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])


def failed_on(module: nn.Module, X: torch.Tensor, exc: BaseException) -> str:
    """Return what to say when ``module`` raises ``exc`` on the batch ``X``.

    The module's own error first, then what it was given: how many samples,
    their shape and dtype, and, for floating samples given to a network
    with an embedding layer, that such a layer takes integer indices.
    """
    shape, dtype = tuple(X.shape[1:]), str(X.dtype).removeprefix("torch.")
    msg = (
        f"{type(module).__name__} failed on a batch of {len(X)} training samples "
        f"of shape {shape} and dtype {dtype} ({type(exc).__name__}: {exc})."
    )
    if X.dtype.is_floating_point and takes_indices(module):
        msg += (
            " The network holds an nn.Embedding or nn.EmbeddingBag, whose input is "
            "integer indices: pass X as an integer array to give it int64 samples."
        )
    return msg


def output_shape(module: nn.Module, X: torch.Tensor, device=None) -> tuple[int, ...]:
    """Return the shape of ``module(X)`` per sample, without side effects.

    The module runs once on the whole batch ``X`` (at least two of the
    user's training samples, since a training batch never has fewer) in
    :func:`training_conditions`: training mode, no gradients, buffers, modes
    and random state put back.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    X : torch.Tensor
        A batch of samples, on the module's device.
    device : str or torch.device, default=None
        Where the module runs (for the random state of a GPU).

    Returns
    -------
    shape : tuple of int
        The output's shape without the batch dimension.

    Raises
    ------
    ValueError
        If the module raises on this batch; the message starts with the
        module's own error, which is chained.
    """
    return per_sample_shape(run_in_training_conditions(module, X, device))


def run_in_training_conditions(module, X, device=None):
    """Return ``module(X)`` computed in :func:`training_conditions`.

    A failure of the module is a ValueError that carries its message (see
    :func:`failed_on`) and chains it.
    """
    try:
        with training_conditions(module, device):
            out = module(X)
    except Exception as exc:  # noqa: BLE001 (any error of the user's module)
        raise ValueError(failed_on(module, X, exc)) from exc
    return out


def per_sample_shape(out) -> tuple[int, ...]:
    """Return the shape of a batch of outputs without the batch dimension."""
    if not isinstance(out, torch.Tensor):
        msg = (
            f"The network returned {type(out).__name__}; the estimators need a "
            "network whose forward returns a single tensor."
        )
        raise TypeError(msg)
    return tuple(out.shape[1:])
