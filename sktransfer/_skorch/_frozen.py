"""One definition of "frozen", and training-time state that ends with ``fit``.

A parameter is frozen for fine-tuning when it matches the estimator's
``frozen`` patterns or arrives with ``requires_grad=False`` (a module frozen
by hand, as in PyTorch's fine-tuning tutorial), except in the head, which
``fit`` initialises afresh and trains. Frozen layers run in evaluation mode
by that same definition (normalisation on running statistics, dropout and
stochastic depth off: :func:`~sktransfer._torch._held.hold_frozen_layers`), as a
feature extractor does, unless ``freeze_bn_stats=False``.

What ``fit`` installs on the net for training (``requires_grad=False`` on the
``frozen`` matches, the hooks that hold normalisation layers, the unfreezing
callback) is undone when ``fit`` ends, on success or error: every installer
registers its undo with :func:`on_exit` on the one
:class:`contextlib.ExitStack` that :func:`fit_scope` opens around ``fit``.
The fitted ``net_.module_`` is then a plain PyTorch module: no hook of
sktransfer's, every parameter with the ``requires_grad`` it arrived with, and
``module.train()`` puts every layer in training mode.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from .._common import warn_at_user
from .._torch import _held, _layers, _transfer

# The undo stack of the fit running in this thread (None outside fit).
_UNDO: ContextVar[ExitStack | None] = ContextVar("sktransfer_undo", default=None)


@contextmanager
def fit_scope():
    """Undo, when the block ends, the training-time state installed inside it."""
    with ExitStack() as stack:
        token = _UNDO.set(stack)
        try:
            yield stack
        finally:
            _UNDO.reset(token)


def on_exit(callback, /, *args, **kwargs):
    """Register ``callback(*args, **kwargs)`` to run when the current fit ends."""
    stack = _UNDO.get()
    if stack is None:
        msg = (
            "sktransfer installs training-time state only inside fit_scope(), "
            "which undoes it when fit ends."
        )
        raise RuntimeError(msg)
    stack.callback(callback, *args, **kwargs)


def wrap_get_loss(net, wrapper):
    """Make ``wrapper`` the net's ``get_loss`` until the current fit ends.

    ``wrapper`` is called as skorch calls ``get_loss`` and is expected to call
    the ``get_loss`` the net had when it was made (``net.get_loss``, bound),
    so that wrappers compose: sample weights, then L2-SP, each around the
    last. When fit ends, the net gets back what it had (usually nothing on
    the instance: skorch's method).
    """
    had = "get_loss" in vars(net)
    previous = vars(net).get("get_loss")
    net.get_loss = wrapper

    def undo():
        if had:
            net.get_loss = previous
        else:
            vars(net).pop("get_loss", None)

    on_exit(undo)


def frozen_parameters(module, matched, head):
    """Return the names of the parameters frozen for fine-tuning, in module order.

    Parameters
    ----------
    module : torch.nn.Module
        The network, with its head rebuilt.
    matched : iterable of str
        The parameters matching the ``frozen`` patterns.
    head : sequence of str
        The head's submodule names; their parameters are frozen only when
        matched.

    Returns
    -------
    names : list of str
        The matched parameters and those with ``requires_grad=False`` outside
        the head.
    """
    matched = set(matched)
    return [
        name
        for name, param in module.named_parameters()
        if name in matched
        or (not param.requires_grad and not _layers.is_under(name, head))
    ]


def freeze_for_fit(
    net,
    matched,
    head,
    spec,
    *,
    hold_norm,
    layers=(),
):
    """Freeze ``net.module_`` for one fit; undone by :func:`fit_scope` at its end.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net; its ``module_`` is changed in place.
    matched : list of str
        The parameters matching the ``frozen`` patterns.
    head : sequence of str
        The head's submodule names: trainable unless matched.
    spec : str or sequence of str
        The estimator's ``frozen``, for messages.
    hold_norm : bool
        Hold the frozen layers in evaluation mode (the estimator's
        ``freeze_bn_stats``: normalisation on running statistics, dropout and
        stochastic depth off; :func:`~sktransfer._torch._held.hold_frozen_layers`).
    layers : sequence of str, default=()
        The submodules that ``frozen`` patterns name; everything inside them is
        held too, including layers without parameters.

    Returns
    -------
    frozen : list of str
        The frozen parameters (see :func:`frozen_parameters`).

    Raises
    ------
    ValueError
        When no parameter would be trainable.
    """
    module = net.module_
    frozen = frozen_parameters(module, matched, head)
    params = dict(module.named_parameters())
    trainable = [name for name in params if name not in set(frozen)]
    if not trainable:
        by_hand = len(frozen) - len(set(matched))
        also = (
            f" (with the {by_hand} that already have requires_grad=False)"
            if by_hand
            else ""
        )
        msg = (
            f"frozen={spec!r} leaves no trainable parameter in "
            f"{type(module).__name__}{also}, so fine-tuning would train nothing. "
            "Leave at least the head out of frozen, or set requires_grad=True on "
            "the parameters to train."
        )
        raise ValueError(msg)
    in_head = [name for name in matched if _layers.is_under(name, head)]
    if in_head:
        msg = (
            f"frozen={spec!r} freezes parameters of the head "
            f"({', '.join(in_head)}), which fit initialises afresh: they keep "
            "random values. Leave the head out of frozen to train it."
        )
        warn_at_user(msg, UserWarning)
    arrived = {name: param.requires_grad for name, param in params.items()}
    on_exit(_restore, module, arrived)
    for name in trainable:
        params[name].requires_grad_(True)  # a head frozen by hand: reset, trained
    _transfer.freeze(module, frozen)
    if hold_norm:
        _held.hold_frozen_layers(module, frozen, layers)
    return frozen


def _restore(module, arrived):
    """Undo :func:`freeze_for_fit`: the module as it arrived, its hooks removed."""
    _held.release_norm_layers(module, every=True)
    for name, param in module.named_parameters():
        if name in arrived:
            param.requires_grad_(arrived[name])
