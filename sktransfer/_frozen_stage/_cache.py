"""Frozen layers computed once: find a network's frozen leading stage and split it off.

When the frozen parameters make up the first stage of a network (a backbone
applied to the input before the trainable rest), fine-tuning recomputes that
stage's output for every sample in every epoch although it never changes. This
module finds such a stage with :mod:`torch.fx`, proves it safe to cache, and
splits the network into the stage and the rest, two graph modules that share
the original module's layers and parameters. Pure functions over torch
modules; the estimators decide when to use them.

A stage is cached only when all of these hold, and the reason is given when
one does not:

- ``torch.fx`` can trace the network's ``forward`` (no data-dependent control
  flow) and it takes one input;
- a node of the traced graph (the *cut*) is computed from the input by frozen
  layers and parameter-free operations only, and nothing after the cut reads
  the input (but for its number of rows, ``x.size(0)``) or any value before
  the cut;
- no layer of the stage behaves differently while training. Frozen means
  feature extraction: with ``freeze_bn_stats=True`` (the default) every fully
  frozen layer runs in evaluation mode while fine-tuning
  (:func:`~sktransfer._torch._layers.hold_frozen_layers`: dropout and stochastic
  depth off, normalisation on its running statistics), so a frozen body is
  deterministic; it is traced as one call each. A stochastic layer without
  parameters outside the frozen blocks (the dropout between the pooled
  features and the head) belongs to the trained part and ends the stage.
  With ``freeze_bn_stats=False`` frozen layers follow the network's training
  mode, as skorch's ``Freezer`` leaves them, and a stage with active dropout
  or batch statistics is not cached;
- nothing between the array and the module looks at the samples: skorch's
  own dataset, iterators and methods, no ``collate_fn`` or sampler, no
  validation set of its own (:mod:`sktransfer._skorch._trust`);
- a probe confirms it: on a few samples, the stage gives the same output in
  training mode (twice, with different random seeds) as in evaluation mode, and
  the split network gives the same output as the whole one.

A network that ``torch.fx`` cannot trace (a Hugging Face model) may declare
its cut instead, as timm's models do: ``forward_features(x)`` returns the
head's input and ``forward_head(features)`` the output, with ``forward(x) ==
forward_head(forward_features(x))``. When tracing finds no stage, that cut is
cached if ``forward_features`` reads no trainable parameter, its layers run in
evaluation mode while training (held, as above), no top-level submodule
serves both sides, and the same probe confirms it (:func:`_declared_stage`).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from scipy import sparse
from skorch.utils import to_tensor
from torch import fx, nn

from .._common import _dense_rows
from .._compat import _DropoutNd, _NormBase
from .._skorch import _trust
from .._torch._layers import is_held, is_under, modes_restored
from .._torch._lora import is_adapter_layer
from . import _store


@dataclass(frozen=True)
class FrozenStage:
    """A network split at the end of its frozen leading stage.

    Attributes
    ----------
    stage : torch.fx.GraphModule or torch.nn.Module
        The frozen stage: the network's input to the cut's output (a traced
        graph, or the network's own ``forward_features`` for a declared cut).
    rest : torch.fx.GraphModule or torch.nn.Module
        The trainable rest: the cut's output to the network's output (or the
        network's ``forward_head``). Its layers and parameters are the
        original module's own objects.
    cut : str
        The traced node the network is cut after, e.g. ``"features_4"``, or
        ``"forward_features"`` for a cut the network declares.
    sample_shape : tuple of int
        The shape of the stage's output for one sample.
    dtype : torch.dtype
        The dtype of the stage's output.
    reuse : tuple or None
        ``(owner, settings)`` of :func:`sktransfer._frozen_stage._store.key` when the
        stage's weights are a pretrained record's: its outputs are shared
        with the other fits from that record (:meth:`outputs`).
    """

    stage: nn.Module
    rest: nn.Module
    cut: str
    sample_shape: tuple[int, ...]
    dtype: torch.dtype
    reuse: tuple | None = field(default=None, compare=False, repr=False)

    def nbytes(self, n_samples):
        """Return the size of the cached outputs of ``n_samples`` samples."""
        per_sample = torch.Size(self.sample_shape).numel()
        return n_samples * per_sample * self.dtype.itemsize

    def transform(self, X, *, batch_size, device, keep_on="cpu"):
        """Return the stage's output for ``X``, computed in batches on ``device``.

        The outputs are kept on ``keep_on`` (see :func:`cache_device`). The
        stage runs in evaluation mode without gradients; the modes of its
        layers are restored afterwards.
        """
        is_sparse = sparse.issparse(X)
        X = X if is_sparse else torch.as_tensor(X)
        n_samples = X.shape[0]
        with modes_restored(self.stage), torch.no_grad():
            self.stage.eval()
            out = None
            for start in range(0, n_samples, batch_size):
                rows = X[start : start + batch_size]
                if is_sparse:  # densified a batch at a time
                    rows = torch.from_numpy(rows.toarray())
                chunk = self.stage(rows.to(device))
                if out is None:
                    out = torch.empty(
                        (n_samples, *chunk.shape[1:]),
                        dtype=chunk.dtype,
                        device=keep_on,
                    )
                out[start : start + len(chunk)] = chunk
        return out

    def outputs(self, X, *, batch_size, device, keep_on="cpu", report=None):
        """As :meth:`transform`, reusing the rows stored by earlier fits.

        See :func:`sktransfer._frozen_stage._store.outputs`.
        """
        how = {"batch_size": batch_size, "device": device, "keep_on": keep_on}
        return _store.outputs(self, X, report=report, **how)

    @contextmanager
    def training_rest(self, net):
        """Let the skorch ``net`` train the rest, on cached stage outputs, inside."""
        module = net.module_
        net.module_ = self.rest
        try:
            yield
        finally:
            net.module_ = module


def cache_device(device, nbytes):
    """Where to keep a cache of ``nbytes`` for a network on ``device``.

    On a GPU when it takes at most half of the GPU's free memory, so that no
    epoch copies it from the host; otherwise on the CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= free // 2:
            return device
    return torch.device("cpu")


def _leaf_problem(name, layer):
    """Why a frozen layer may not be cached, or None when it may."""
    if any(param.requires_grad for param in layer.parameters()):
        return None  # trainable: ends the stage, not a problem
    if is_held(layer):
        return None  # runs in evaluation mode: deterministic
    return _mode_problem(name, layer)


def _mode_problem(name, layer):
    """Why ``layer`` computes otherwise while training (random, batch statistics)."""
    kind = type(layer).__name__
    if isinstance(layer, _DropoutNd) and layer.p > 0:
        return f"{name} ({kind}, p={layer.p}) is random while training"
    if isinstance(layer, nn.RReLU):
        return f"{name} ({kind}) is random while training"
    if isinstance(layer, _NormBase) and layer.track_running_stats:
        if not is_held(layer):
            return (
                f"{name} ({kind}) normalises with batch statistics while "
                "training (freeze_bn_stats=False, or parameters of it trainable)"
            )
    return None


def _trainable(layer):
    return any(param.requires_grad for param in layer.parameters(recurse=True))


def _stage_region(graph_module):
    """Nodes computed from the input by frozen, deterministic operations only.

    Returns the region (a set of nodes) and the first reason a frozen node was
    left out of it, if any.
    """
    region, problem = set(), None
    for node in graph_module.graph.nodes:
        if node.op == "output":
            continue
        if not all(arg in region for arg in node.all_input_nodes):
            continue
        if node.op == "call_module":
            layer = graph_module.get_submodule(node.target)
            if _trainable(layer):
                continue
            why = _leaf_problem(node.target, layer)
            if why is not None:
                problem = problem or why
                continue
        elif node.op == "get_attr":
            value = _get_attr(graph_module, node.target)
            if isinstance(value, torch.Tensor) and value.requires_grad:
                continue
        elif _is_random(node):
            problem = problem or f"{node.name} draws random numbers while training"
            continue
        region.add(node)
    return region, problem


# Functions and tensor methods that draw random numbers: a graph traced in
# training mode calls them where the module's forward would in training.
_RANDOM_FUNCTIONS = {
    getattr(module, name)
    for module, names in (
        (torch.nn.functional, ("dropout", "dropout1d", "dropout2d", "dropout3d")),
        (torch.nn.functional, ("alpha_dropout", "feature_alpha_dropout", "rrelu")),
        (torch, ("dropout", "bernoulli", "rand", "rand_like", "randn", "randn_like")),
        (torch, ("randint", "randint_like", "randperm", "multinomial", "normal")),
    )
    for name in names
    if hasattr(module, name)
}
_RANDOM_METHODS = {
    "bernoulli",
    "bernoulli_",
    "uniform_",
    "normal_",
    "random_",
    "exponential_",
    "geometric_",
    "cauchy_",
    "log_normal_",
}


def _is_random(node):
    """Whether a traced ``node`` draws random numbers (dropout, stochastic depth)."""
    if node.op == "call_function":
        return node.target in _RANDOM_FUNCTIONS
    return node.op == "call_method" and node.target in _RANDOM_METHODS


def _get_attr(graph_module, target):
    obj = graph_module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _ancestors(node):
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        for arg in current.all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                todo.append(arg)
    return seen


def _find_cut(graph_module, region):
    """Return the last node of ``region`` that alone carries the stage onwards.

    The stage must hold a frozen parameter: caching parameter-free operations
    alone saves nothing.
    """
    placeholder = next(n for n in graph_module.graph.nodes if n.op == "placeholder")
    best = None
    for node in graph_module.graph.nodes:
        if node not in region or node.op in ("placeholder", "get_attr"):
            continue
        before = _ancestors(node)
        if placeholder not in before:
            continue
        leaks = any(
            user is not node
            and user not in before
            and not (inner is placeholder and _reads_batch_size(user))
            for inner in before
            if inner.op != "get_attr"
            for user in inner.users
        )
        part = before | {node}
        if not leaks and any(_holds_parameters(graph_module, n) for n in part):
            best = (node, part)
    return best


def _reads_batch_size(node):
    """Whether ``node`` is ``x.size(0)``: the rest may read it from the stage's output.

    ``batch_size = x.size(0)`` then ``x.view(batch_size, -1)`` before the head
    (EfficientNet, many classic networks) reads the input after the cut; the
    stage's output has the same number of rows.
    """
    if node.op != "call_method" or node.target != "size":
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return dim == 0


def _holds_parameters(graph_module, node):
    """Whether ``node`` is a layer with parameters or reads a parameter."""
    if node.op == "call_module":
        layer = graph_module.get_submodule(node.target)
        return any(True for _ in layer.parameters())
    if node.op == "get_attr":
        return isinstance(_get_attr(graph_module, node.target), nn.Parameter)
    return False


def _split(graph_module, cut, part):
    """Return the stage (input to cut) and the rest (cut to output) as modules."""
    stage_graph, env = fx.Graph(), {}
    for node in graph_module.graph.nodes:
        if node in part:
            env[node] = stage_graph.node_copy(node, lambda arg: env[arg])
    stage_graph.output(env[cut])

    rest_graph = fx.Graph()
    env = {cut: rest_graph.placeholder("stage_output")}
    for node in graph_module.graph.nodes:
        if node in part and node.op != "get_attr":
            continue
        if node.op == "placeholder":
            continue  # the input: only its batch size is read after the cut
        if _reads_batch_size(node) and node.args[0].op == "placeholder":
            env[node] = rest_graph.call_method("size", (env[cut], 0))
            continue
        env[node] = rest_graph.node_copy(node, lambda arg: env[arg])
    rest = fx.GraphModule(graph_module, rest_graph)
    rest.graph.eliminate_dead_code()  # frozen parameters only the stage reads
    rest.recompile()
    return fx.GraphModule(graph_module, stage_graph), rest


def find_frozen_stage(module: nn.Module, probe: torch.Tensor):
    """Split ``module`` after its frozen leading stage, if that is safe to cache.

    The stage is found by tracing with ``torch.fx``; when that finds none and
    the module declares its cut (:func:`declares_cut`), the cut it declares is
    used if ``forward_features`` is fully frozen (:func:`_declared_stage`).

    Parameters
    ----------
    module : torch.nn.Module
        The network, with its frozen parameters already at
        ``requires_grad=False`` and frozen BatchNorm layers held in evaluation
        mode. It is not changed (its buffers and modes are restored after the
        probe).
    probe : torch.Tensor
        A few samples on the module's device, for the checks.

    Returns
    -------
    stage : FrozenStage or None
        The split network, or None when caching is not provably safe.
    reason : str or None
        Why not, when ``stage`` is None.
    """
    if module._forward_hooks or module._forward_pre_hooks:
        return None, f"{type(module).__name__} has forward hooks of its own"
    split, why = _traced_stage(module, probe)
    if split is None and declares_cut(module):
        split, declared = _declared_stage(module, probe)
        if split is not None:
            return split, None
        declared = f"its declared cut (forward_features) cannot be cached: {declared}"
        why = f"{declared}; {why}"
    return split, why


def _traced_stage(module, probe):
    """:func:`find_frozen_stage` through ``torch.fx`` (the stage and why not)."""
    with modes_restored(module):
        module.train()  # trace the forward that fine-tuning runs
        try:
            traced = fx.GraphModule(module, _HeldLeaves().trace(module))
        except Exception as exc:  # noqa: BLE001 (any tracing failure: no cache)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"torch.fx cannot trace {type(module).__name__}: {first}"
    if sum(node.op == "placeholder" for node in traced.graph.nodes) != 1:
        return None, "the network's forward takes more than one input"
    region, problem = _stage_region(traced)
    found = _find_cut(traced, region)
    if found is None:
        return None, problem or (
            "no frozen stage feeds the trainable layers on its own: the first "
            "layer with parameters is trainable, or later layers also read the "
            "input or intermediate values of the frozen layers"
        )
    cut, part = found
    stage, rest = _split(traced, cut, part)
    why, out = _probe(module, stage, rest, probe)
    if why is not None:
        return None, why
    split = FrozenStage(stage, rest, cut.name, tuple(out.shape[1:]), out.dtype)
    return split, None


def declares_cut(module):
    """Whether ``module`` declares its cut: ``forward_features`` and ``forward_head``.

    As timm's models do: ``forward_features(x)`` returns the head's input and
    ``forward_head(features)`` the network's output, so that ``forward(x)``
    equals ``forward_head(forward_features(x))``.
    """
    return all(
        callable(getattr(module, name, None))
        for name in ("forward_features", "forward_head")
    )


class _Part(nn.Module):
    """One side of a declared cut: ``forward_features`` or ``forward_head``.

    Runs that method of ``owner``, and holds the owner's top-level submodules
    (and direct parameters and buffers) of that side under their own names,
    so that its parameters, state dict and training modes are theirs. The
    owner itself is kept outside the module tree. The head's side also sets
    the owner's own ``training`` flag, which a ``forward_head`` may read.
    """

    def __init__(self, owner, method, modules=(), parameters=(), buffers=()):
        super().__init__()
        self.__dict__["owner"] = owner
        self.method = method
        for name in modules:
            self._modules[name] = owner._modules[name]
        for name in parameters:
            self._parameters[name] = owner._parameters[name]
        for name in buffers:
            self._buffers[name] = owner._buffers[name]

    def forward(self, x):
        return getattr(self.__dict__["owner"], self.method)(x)

    def train(self, mode=True):
        super().train(mode)
        if self.method == "forward_head":
            self.__dict__["owner"].training = mode
        return self


@contextmanager
def _calls(children):
    """Record the names of the ``children`` (name to module) called inside."""
    called = []
    handles = [
        child.register_forward_pre_hook(lambda *_, name=name: called.append(name))
        for name, child in children.items()
    ]
    try:
        yield called
    finally:
        for handle in handles:
            handle.remove()


def _declared_stage(module, probe):
    """Split ``module`` at the cut it declares (:func:`declares_cut`), if safe.

    The stage is ``forward_features``: every parameter it reads must be frozen
    (no gradient reaches one from its output), the layers of the top-level
    submodules it calls must not be random or use batch statistics while the
    network trains (frozen parts held in evaluation mode), and no top-level
    submodule may serve ``forward_head`` too. :func:`_probe` then confirms it
    as for a traced stage. Returns the :class:`FrozenStage` (or None) and why
    not.
    """
    name = type(module).__name__
    children = dict(module.named_children())
    with modes_restored(module), torch.random.fork_rng():
        module.eval()
        try:
            with _calls(children) as features_calls, torch.enable_grad():
                features = module.forward_features(probe)
        except NotImplementedError as exc:
            return None, f"{name}.forward_features is not implemented ({exc})"
        except Exception as exc:  # noqa: BLE001 (a failing probe only means: no cache)
            return None, (
                f"forward_features fails on a probe batch ({type(exc).__name__}: {exc})"
            )
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            return None, "forward_features does not return one floating-point tensor"
        if features.requires_grad:
            trainable = [
                (n, p) for n, p in module.named_parameters() if p.requires_grad
            ]
            grads = torch.autograd.grad(
                features.sum(), [p for _, p in trainable], allow_unused=True
            )
            pairs = zip(trainable, grads, strict=True)
            used = [n for (n, _), grad in pairs if grad is not None]
            what = f"the trainable parameter {used[0]}" if used else "a trainable value"
            return None, f"forward_features reads {what}"
        try:
            with _calls(children) as head_calls, torch.no_grad():
                module.forward_head(features.detach())
        except Exception as exc:  # noqa: BLE001
            return None, (
                f"forward_head fails on forward_features' output "
                f"({type(exc).__name__}: {exc})"
            )
        shared = [n for n in children if n in features_calls and n in head_calls]
        if shared:
            return None, f"forward_features and forward_head both call {shared[0]}"
        module.train()  # the modes fine-tuning runs the stage in
        for child in dict.fromkeys(features_calls):
            for sub_name, sub in children[child].named_modules(prefix=child):
                if sub.training and not is_held(sub):
                    why = _mode_problem(sub_name, sub)
                    if why is not None:
                        return None, why
    stage_modules = [n for n in children if n in features_calls]
    direct = module._parameters
    stage = _Part(
        module,
        "forward_features",
        stage_modules,
        [n for n, p in direct.items() if p is not None and not p.requires_grad],
        [n for n, b in module._buffers.items() if b is not None],
    )
    rest = _Part(
        module,
        "forward_head",
        [n for n in children if n not in stage_modules],
        [n for n, p in direct.items() if p is not None and p.requires_grad],
    )
    why, out = _probe(module, stage, rest, probe)
    if why is not None:
        return None, why
    return FrozenStage(
        stage, rest, "forward_features", tuple(out.shape[1:]), out.dtype
    ), None


class _HeldLeaves(fx.Tracer):
    """A tracer that keeps each held layer and each adapted layer as one call.

    A held layer (:func:`~sktransfer._torch._layers.hold_frozen_layers`) runs in
    evaluation mode whatever the network's mode; traced through, the Python
    value of its ``self.training`` (stochastic depth's ``if not training``)
    would be baked into the graph in training mode. A layer adapted by peft
    (:func:`~sktransfer._torch._lora.is_adapter_layer`) is one trainable call.
    """

    def is_leaf_module(self, m, module_qualified_name):
        return (
            is_held(m)
            or is_adapter_layer(m)
            or super().is_leaf_module(m, module_qualified_name)
        )


def new_report(reason=None, **values):
    """Return a ``frozen_cache_`` report with every documented key.

    ``cached`` (bool), ``stage`` (the traced node the network is cut after),
    ``nbytes``, ``device`` (where the cached outputs or views are kept),
    ``reason`` (why not cached), ``views`` (``cache_views``) and ``outputs``
    (``"computed"``, ``"reused"``, ``"partly reused"`` or None); a cached fit's
    :meth:`FrozenStage.outputs` adds ``digest_seconds``, ``compute_seconds``
    and ``store``. The one place the report is made, on every path of ``fit``.
    """
    report = {
        "cached": False,
        "stage": None,
        "nbytes": 0,
        "device": None,
        "reason": reason,
        "views": None,
        "outputs": None,
    }
    report.update(values)
    return report


def reuse_key(stage, reuse):
    """Return ``(owner, settings)`` for the store's key, or None.

    The key is :func:`sktransfer._frozen_stage._store.key`'s.

    ``reuse`` is ``(record, head, settings)`` when ``fit`` loaded the
    network's weights from the pretrained ``record``; the stage's outputs are
    then shared with other fits from that record only if every tensor of the
    stage is the record's (none under ``head``, which ``fit`` initialises),
    and never for a cut the network declares (its ``forward_features`` is the
    network's own code, which the key's structure digest cannot name).
    """
    if reuse is None or isinstance(stage.stage, _Part):
        return None  # a declared cut runs the network's own code: not keyed
    record, head, settings = reuse
    names = list(stage.stage.state_dict(keep_vars=True))
    if any(n not in record.state_dict or is_under(n, head) for n in names):
        return None
    return _store.owner(record), settings


def plan(
    module,
    X,
    *,
    unfrozen_later,
    net,
    net_class,
    cache_frozen,
    limit,
    device,
    verbose,
    reuse=None,
):
    """Decide whether ``fit`` computes the frozen stage of ``module`` once.

    Parameters
    ----------
    module : torch.nn.Module
        The network, frozen and ready to fine-tune.
    X : ndarray
        The training samples.
    unfrozen_later : dict of str to int
        Frozen parameters that an unfreezing schedule trains from an epoch on;
        a stage holding one of them is not cached.
    net : skorch.NeuralNet
        The initialised net. Its data path must not look at the samples
        (:func:`sktransfer._skorch._trust.data_path_problem`): otherwise neither
        ``"auto"`` nor ``True`` caches. While the cache is used, ``module_``
        is the trainable rest only, so ``"auto"`` does not cache when a
        callback other than skorch's bookkeeping ones or one marked
        ``_sktransfer_cache_safe`` may read or write the module's parameters
        (e.g. ``Checkpoint``, ``EarlyStopping`` with ``load_best=True``);
        ``True`` caches anyway.
    net_class : type
        The skorch class the estimator builds, whose methods are trusted.
    cache_frozen : "auto" or bool
        The estimator's parameter: ``"auto"`` caches when it is safe and the
        cache takes at most ``limit`` bytes, ``True`` whenever it is safe
        (else a ValueError saying why), ``False`` never.
    limit : int
        The most bytes ``"auto"`` lets the cache take.
    device : str or torch.device
        Where the module is.
    verbose : int
        Print what was decided, and why, when positive.
    reuse : tuple or None, default=None
        ``(record, head, settings)`` when the network's weights were loaded
        from a pretrained record (:func:`reuse_key`): the stage's outputs are
        then shared with the other fits from that record.

    Returns
    -------
    split : FrozenStage or None
        The split network, or None to fine-tune the whole network.
    report : dict
        :func:`new_report`, for ``frozen_cache_``.
    """
    if cache_frozen is False:
        return None, new_report("cache_frozen=False")
    if all(param.requires_grad for param in module.parameters()):
        split, why = None, "no parameter is frozen"
    elif (problem := _trust.data_path_problem(net, net_class)) is not None:
        split, why = None, problem
    else:
        split, why = find_frozen_stage(
            module, to_tensor(_dense_rows(X, 8), device=device)
        )
    if split is not None:
        thawed = [n for n, _ in split.stage.named_parameters() if n in unfrozen_later]
        if thawed:
            split, why = (
                None,
                (
                    f"unfreeze trains {thawed[0]} of the frozen stage from epoch "
                    f"{unfrozen_later[thawed[0]]}"
                ),
            )
    if split is not None and cache_frozen == "auto":
        name = _trust.callback_on_module(net.callbacks_)
        if name is not None:
            split, why = (
                None,
                (
                    f"the callback {name!r} may read or write the module's parameters, "
                    "which are only the trainable rest's while the cache is used; "
                    "cache_frozen=True caches anyway"
                ),
            )
    nbytes = 0
    if split is not None:
        nbytes = split.nbytes(X.shape[0])
        if cache_frozen == "auto" and nbytes > limit:
            split = None
            why = (
                f"its outputs would take {nbytes / 2**20:.0f} MiB, more than the "
                f"training data or 1 GiB ({limit / 2**20:.0f} MiB); "
                "cache_frozen=True caches them anyway"
            )
    if split is None:
        if cache_frozen is True:
            msg = (
                f"cache_frozen=True, but the frozen layers cannot be computed once: "
                f"{why}. Set cache_frozen='auto' to fine-tune without the cache "
                "when it cannot be used."
            )
            raise ValueError(msg)
        if verbose and why != "no parameter is frozen":
            print(f"[sktransfer] Not caching the frozen layers: {why}.")
        return None, new_report(why, nbytes=nbytes)
    keep_on = cache_device(device, nbytes)
    split = dataclasses.replace(split, reuse=reuse_key(split, reuse))
    report = new_report(
        cached=True, stage=split.cut, nbytes=nbytes, device=str(keep_on)
    )
    if verbose:
        print(
            f"[sktransfer] Frozen layers computed once, up to {split.cut!r}: "
            f"{split.sample_shape} per sample, {nbytes / 2**20:.1f} MiB on {keep_on}"
        )
    return split, report


def _probe(module, stage, rest, X):
    """Check on ``X`` that the stage is deterministic and the split faithful.

    Returns why not (None if it is) and the stage's output.
    """
    buffers = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        with modes_restored(module), torch.no_grad(), torch.random.fork_rng():
            module.eval()
            expected = stage(X)
            whole = module(X)
            if not isinstance(expected, torch.Tensor):
                return "the frozen stage's output is not a single tensor", None
            if not _close(rest(expected), whole):
                why = "the split network does not reproduce the network's output"
                return why, None
            module.train()
            for seed in (0, 1):
                torch.manual_seed(seed)
                if not _close(stage(X), expected):
                    why = (
                        "the frozen stage's output changes while training "
                        "(random or batch-dependent operations)"
                    )
                    return why, None
    except Exception as exc:  # noqa: BLE001 (a failing probe only means: no cache)
        why = f"the split network fails on a probe batch ({type(exc).__name__}: {exc})"
        return why, None
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(buffers[name])
    return None, expected


def _close(a, b):
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    )
