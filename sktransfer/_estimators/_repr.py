"""A readable ``repr`` for estimators that hold a skorch template.

scikit-learn prints a nested estimator with every parameter it has; for a
skorch net that is some twenty settings, private bookkeeping
(``_params_to_validate``) and classes as ``<class '...'>``. Here the template
prints as one would write it: the module, then only the settings that differ
from skorch's defaults, classes and functions by name.
"""

from __future__ import annotations

import copy
import inspect

from skorch import NeuralNet


class _Shown:
    """A value whose ``repr`` is the given text (for scikit-learn's printer)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _name(value):
    if inspect.isclass(value) or inspect.isfunction(value):
        return value.__name__
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(item, tuple) and len(item) == 2 for item in value)
    ):  # skorch's named callbacks
        items = ", ".join(f"({n!r}, {_name(v)})" for n, v in value)
        return f"[{items}]"
    if isinstance(value, list | tuple):
        items = ", ".join(_name(v) for v in value)
        return (
            f"[{items}]"
            if isinstance(value, list)
            else f"({items}{',' * (len(value) == 1)})"
        )
    if hasattr(value, "get_params") and not inspect.isclass(value):
        return f"{type(value).__name__}({_settings(value)})"
    return repr(value)


def _defaults(cls):
    defaults = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            for name, param in inspect.signature(klass.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    defaults[name] = param.default
    return defaults


def _same(a, b):
    try:
        return bool(a == b) if type(a) is type(b) else a is b
    except (TypeError, ValueError):
        return False


def _settings(obj):
    """Return ``name=value, ...`` for the settings of ``obj`` not at their default."""
    defaults = _defaults(type(obj))
    params = obj.get_params(deep=False)
    shown = []
    for name, value in sorted(params.items()):
        if name.startswith("_") or name == "module":
            continue
        if name in defaults and _same(value, defaults[name]):
            continue
        shown.append(f"{name}={_name(value)}")
    return ", ".join(shown)


def net_repr(net):
    """Return the repr of a skorch net template, as it would be written.

    Examples
    --------
    >>> import torch
    >>> from skorch import NeuralNetClassifier
    >>> from sktransfer import MLP
    >>> from sktransfer._estimators._repr import net_repr
    >>> net_repr(NeuralNetClassifier(MLP, lr=0.1, optimizer=torch.optim.Adam))
    'NeuralNetClassifier(MLP, lr=0.1, optimizer=Adam)'
    """
    module = net.module
    head = _name(module) if inspect.isclass(module) else f"{type(module).__name__}(...)"
    settings = _settings(net)
    return f"{type(net).__name__}({head}{', ' if settings else ''}{settings})"


def estimator_repr(estimator, repr_of_estimator, n_char_max):
    """Return scikit-learn's repr of ``estimator`` with its template shown readably.

    ``repr_of_estimator`` is scikit-learn's ``BaseEstimator.__repr__``.
    """
    if not isinstance(estimator.net, NeuralNet):
        return repr_of_estimator(estimator, N_CHAR_MAX=n_char_max)
    shown = copy.copy(estimator)  # a shallow copy: the estimator is not changed
    shown.net = _Shown(net_repr(estimator.net))
    return repr_of_estimator(shown, N_CHAR_MAX=n_char_max)
