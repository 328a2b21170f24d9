"""Layers and parameters named by the user: glob patterns, the head's submodules."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import nn

_MAX_LISTED = 12


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


def is_under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether the state key ``key`` belongs to one of the submodules ``prefixes``."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)
