"""The lean training step: skorch's loop without the work that changes nothing.

skorch runs every batch through the same general machinery: it calls each
callback's per-batch hooks (``on_batch_begin``, ``on_batch_end``,
``on_grad_computed``) whether or not the callback does anything there, and it
switches every module and criterion into training mode before each batch by
walking all of their submodules (``NeuralNet._set_training``). With small
batches that Python work is a visible part of each step.

:class:`LeanStepMixin` extends skorch's loop in one place, through skorch's
documented overridable methods, and drops only what provably changes nothing:

- ``notify`` skips, for the per-batch hooks only, the callbacks whose class
  inherits that hook unchanged from :class:`skorch.callbacks.Callback` (a
  method that does nothing) and does not set it on the instance. Every hook a
  callback overrides still fires, with skorch's arguments, in skorch's order;
  the net's own hooks (which keep the history) always run.
- ``forward`` (prediction) checks the net and sets the modes once per call
  rather than once per batch.
- ``train_step`` leaves out the ``on_grad_computed`` notification, and the
  generator over every learnable parameter that skorch builds for it, when
  nothing would hear it: no callback overrides that hook and the net's own is
  skorch's (which does nothing). The optimizer's closure, which LBFGS calls
  several times, and skorch's step accumulator stay as they are.
- ``run_single_epoch`` puts the modules into training mode once when a
  training epoch starts, and ``train_step_single`` switches them again before a
  batch only when something that ran since may have changed a mode: a callback
  with a per-batch hook that is not known to leave modes alone, or a method of
  the net replaced on the instance (a ``get_loss`` wrapper counts as safe when
  its class says so with ``sktransfer_safe = True`` in its own body, see
  :mod:`._safety`).

Everything else is skorch's own code: the epoch and batch loops, the
optimizer's closure, the history, ``self.get_loss`` (the instance's, possibly
wrapped). The estimators use the lean classes only where the template's class
is exactly skorch's :class:`~skorch.NeuralNetClassifier` or
:class:`~skorch.NeuralNetRegressor`; a user's subclass is trained by its own
class, unchanged, so that its hooks run as written.
"""

from __future__ import annotations

from functools import cache

import torch
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch import callbacks as skorch_callbacks
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import to_device

from . import _text
from ._safety import declares_safe

# The hooks skorch's loop calls once per batch.
_PER_BATCH = frozenset({"on_batch_begin", "on_batch_end", "on_grad_computed"})

# skorch callbacks whose per-batch hooks never change a module's mode: they
# clip gradients, step a learning-rate scheduler, keep a batch's predictions
# or draw a progress bar. Exact classes: a subclass may do more.
_MODE_SAFE_CALLBACKS = frozenset(
    {
        skorch_callbacks.EpochScoring,
        skorch_callbacks.EpochTimer,
        skorch_callbacks.GradientNormClipping,
        skorch_callbacks.LRScheduler,
        skorch_callbacks.PassthroughScoring,
        skorch_callbacks.PrintLog,
        skorch_callbacks.ProgressBar,
        skorch_callbacks.WarmRestartLR,
    }
)

# Methods of the net that run between two training batches; replaced on the
# instance, they may change modes.
_BETWEEN_BATCHES = (
    "notify",
    "on_batch_begin",
    "on_batch_end",
    "on_grad_computed",
    "infer",
    "get_loss",
    "_set_training",
)


@cache
def _inherited_hooks(cls):
    """Return the per-batch hooks ``cls`` inherits unchanged from skorch's Callback."""
    if not issubclass(cls, Callback):
        return frozenset()
    return frozenset(
        hook for hook in _PER_BATCH if getattr(cls, hook) is getattr(Callback, hook)
    )


def _own_flag(obj, flag):
    """Whether ``type(obj)`` declares itself safe (see :mod:`._safety`)."""
    return declares_safe(obj, legacy=flag)


def _leaves_modes(callback):
    """Whether ``callback``'s per-batch hooks never change a module's mode."""
    if _PER_BATCH & getattr(callback, "__dict__", {}).keys():
        return False  # a hook set on the instance: unknown
    if _inherited_hooks(type(callback)) == _PER_BATCH:
        return True  # no per-batch hook at all
    return type(callback) in _MODE_SAFE_CALLBACKS or _own_flag(
        callback, "_sktransfer_step_safe"
    )


def _hears_grads(net):
    """Whether notifying ``on_grad_computed`` on ``net`` would run any code.

    False only when ``notify`` and the net's own ``on_grad_computed`` are
    skorch's (the latter does nothing) and every callback inherits
    ``on_grad_computed`` unchanged from skorch's ``Callback`` without setting
    it on the instance.
    """
    own = vars(net)
    if "notify" in own or "on_grad_computed" in own:
        return True
    cls = type(net)
    if cls.notify is not LeanStepMixin.notify or (
        cls.on_grad_computed is not NeuralNet.on_grad_computed
    ):
        return True
    return any(
        "on_grad_computed" not in _inherited_hooks(type(cb))
        or "on_grad_computed" in getattr(cb, "__dict__", ())
        for _, cb in net.callbacks_
    )


class LeanStepMixin:
    """skorch ``NeuralNet`` methods that drop per-batch work that changes nothing.

    Mixed into skorch's own net classes ahead of them (see the module's notes);
    not meant for user subclasses, which keep skorch's step.
    """

    def notify(self, method_name, **cb_kwargs):
        """Call the hook ``method_name`` of the net and of each callback that has it.

        As skorch's ``notify``, except that for a per-batch hook a callback
        whose class inherits the hook unchanged from skorch's ``Callback``
        (which does nothing) is not called.
        """
        if method_name not in _PER_BATCH:
            super().notify(method_name, **cb_kwargs)
            return
        getattr(self, method_name)(self, **cb_kwargs)
        for _, cb in self.callbacks_:
            if method_name in _inherited_hooks(type(cb)) and (
                method_name not in getattr(cb, "__dict__", ())
            ):
                continue  # Callback's own hook, which does nothing
            getattr(cb, method_name)(self, **cb_kwargs)

    def train_step(self, batch, **fit_params):
        """Run skorch's ``train_step``, without an ``on_grad_computed`` nobody hears.

        As skorch's: the optimizer's ``step`` is given a closure that zeroes
        the gradients, runs ``train_step_single`` and stores the step in
        skorch's step accumulator (the first step, or LBFGS's first
        evaluation). skorch's closure then notifies ``on_grad_computed`` with
        a generator over every learnable parameter; here that is left out when
        the notification would call nothing but skorch's own empty hooks (see
        :func:`_hears_grads`), and done exactly as in skorch otherwise.
        """
        if _hears_grads(self):
            return super().train_step(batch, **fit_params)
        step_accumulator = self.get_train_step_accumulator()

        def step_fn():
            self._zero_grad_optimizer()
            step = self.train_step_single(batch, **fit_params)
            step_accumulator.store_step(step)
            return step["loss"]

        self._step_optimizer(step_fn)
        return step_accumulator.get_step()

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """Run skorch's epoch, the modules put into training mode once first."""
        if training and iterator is not None:
            self._set_training(True)
            # An attribute ending in "_", which skorch's get_params leaves out.
            self.sktransfer_modes_held_ = self._modes_stay()
        try:
            super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        finally:
            vars(self).pop("sktransfer_modes_held_", None)

    def train_step_single(self, batch, **fit_params):
        """Run skorch's ``train_step_single``, without a needless mode switch.

        The modules are switched into training mode unless they were put there
        when the epoch started and nothing that ran since may have changed a
        mode. Then, as in skorch: ``infer``, ``self.get_loss``, ``backward``.
        """
        if getattr(self, "sktransfer_modes_held_", False) and self._modes_stay():
            return self._train_step_single_in_mode(batch, **fit_params)
        return super().train_step_single(batch, **fit_params)

    def _train_step_single_in_mode(self, batch, **fit_params):
        # skorch's train_step_single after its _set_training(True).
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def forward(self, X, training=False, device="cpu"):
        """Return the module's outputs for ``X``, as skorch's ``forward`` does.

        skorch's ``forward`` collects ``forward_iter``, which checks that the
        net is initialised and switches every module's mode before each batch.
        Here both happen once for the whole call, since nothing else runs
        between the batches (prediction calls no callback); each batch goes
        through ``infer`` as in skorch's ``evaluation_step``.
        """
        self.check_is_fitted()
        if training:
            return self._forward_rows(X, training, device)
        # Texts grouped by length, the outputs in the input order.
        return _text.in_length_order(
            self.module_, X, lambda rows, _: self._forward_rows(rows, False, device)
        )

    def _forward_rows(self, X, training, device):
        """:meth:`forward`'s batches over the rows of ``X`` in their order."""
        iterator = self.get_iterator(self.get_dataset(X), training=training)
        outputs = []
        with torch.set_grad_enabled(training):
            self._set_training(training)
            for batch in iterator:
                Xi, _ = unpack_data(batch)
                outputs.append(to_device(self.infer(Xi), device=device))
        if outputs and isinstance(outputs[0], tuple):
            return tuple(map(torch.cat, zip(*outputs, strict=True)))
        return torch.cat(outputs)

    def _modes_stay(self):
        """Whether nothing that runs between two training batches may switch modes."""
        own = vars(self)
        for name in _BETWEEN_BATCHES:
            if name in own and not _own_flag(own[name], "_sktransfer_step_safe"):
                return False
        return all(_leaves_modes(cb) for _, cb in self.callbacks_)


class LeanNeuralNetClassifier(LeanStepMixin, NeuralNetClassifier):
    """skorch's ``NeuralNetClassifier`` with the lean step (see :mod:`._step`)."""


class LeanNeuralNetRegressor(LeanStepMixin, NeuralNetRegressor):
    """skorch's ``NeuralNetRegressor`` with the lean step (see :mod:`._step`)."""


_LEAN = {
    NeuralNetClassifier: LeanNeuralNetClassifier,
    NeuralNetRegressor: LeanNeuralNetRegressor,
}


def lean(net):
    """Give ``net`` the lean step when its class is exactly skorch's; return it.

    A user's subclass keeps its class: its own hooks run as written.
    """
    cls = _LEAN.get(type(net))
    if cls is not None:
        net.__class__ = cls
    return net


def trusted_class(net, net_class):
    """Return the class whose methods ``net`` is trusted to run unchanged.

    The lean class of skorch's ``net_class`` when ``net`` has it, else
    ``net_class`` itself (for :func:`sktransfer._skorch._trust.data_path_problem`).
    """
    cls = _LEAN.get(net_class)
    return cls if type(net) is cls else net_class
