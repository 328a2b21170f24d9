"""The frozen stage found by tracing the network with ``torch.fx``, and the split."""

from __future__ import annotations

import torch
from torch import fx, nn

from .._torch._held import is_held
from .._torch._lora import is_adapter_layer
from .._torch._probe import modes_restored
from ._stage import FrozenStage
from ._verify import mode_problem, probe_split


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
            # A held layer runs in evaluation mode: deterministic.
            why = None if is_held(layer) else mode_problem(node.target, layer)
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


def traced_stage(module, probe):
    """Find the frozen stage through ``torch.fx``: the split and why not.

    :func:`~sktransfer._frozen_stage._cache.find_frozen_stage` for a traceable
    network.
    """
    with modes_restored(module):
        module.train()  # trace the forward that fine-tuning runs
        try:
            traced = fx.GraphModule(module, _HeldLeaves().trace(module))
        except Exception as exc:  # noqa: BLE001 (any tracing failure: no cache)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            name = getattr(module, "network_name", type(module).__name__)
            return None, f"torch.fx cannot trace {name}: {first}"
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
    why, out = probe_split(module, stage, rest, probe)
    if why is not None:
        return None, why
    split = FrozenStage(stage, rest, cut.name, tuple(out.shape[1:]), out.dtype)
    return split, None


class _HeldLeaves(fx.Tracer):
    """A tracer that keeps each held layer and each adapted layer as one call.

    A held layer (:func:`~sktransfer._torch._held.hold_frozen_layers`) runs in
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
