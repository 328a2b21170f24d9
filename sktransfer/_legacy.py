"""Module paths of sktransfer 0.1.0, kept so that its pickles still load.

0.1.0 kept every module at the package root (``sktransfer._base``); they now live in
rooms by concept (``sktransfer._estimators._base``). A pickle names the module of each
class it holds, so the old names resolve to the new modules through a finder on
``sys.meta_path``, imported by the package root (scikit-learn keeps renamed modules
importable the same way, for one release). A module since split in several
(``sktransfer._layers``) names them all: a pickle's name is looked up in each.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

OLD_TO_NEW = {
    "sktransfer._adapt": "sktransfer._skorch._adapt",
    "sktransfer._adapter_files": "sktransfer._estimators._adapter_files",
    "sktransfer._architectures": "sktransfer._torch._architectures",
    "sktransfer._augment": "sktransfer._fit._augment",
    "sktransfer._base": "sktransfer._estimators._base",
    "sktransfer._build": "sktransfer._fit._build",
    "sktransfer._cache": (
        "sktransfer._frozen_stage._cache",
        "sktransfer._frozen_stage._stage",
        "sktransfer._frozen_stage._traced",
        "sktransfer._frozen_stage._declared",
        "sktransfer._frozen_stage._verify",
        "sktransfer._frozen_stage._report",
    ),
    "sktransfer._classifier": "sktransfer._estimators._classifier",
    "sktransfer._compare": (
        "sktransfer._selection._compare",
        "sktransfer._selection._comparison",
        "sktransfer._selection._candidates",
    ),
    "sktransfer._dask": "sktransfer._pretrained._dask",
    "sktransfer._data": "sktransfer._skorch._data",
    "sktransfer._defaults": "sktransfer._estimators._defaults",
    "sktransfer._docstrings": "sktransfer._estimators._docstrings",
    "sktransfer._features": "sktransfer._estimators._features",
    "sktransfer._finetune": "sktransfer._skorch._finetune",
    "sktransfer._frozen": "sktransfer._skorch._frozen",
    "sktransfer._guard": "sktransfer._fit._guard",
    "sktransfer._hf": "sktransfer._torch._hf",
    "sktransfer._inputs": "sktransfer._fit._inputs",
    "sktransfer._io": "sktransfer._pretrained._io",
    "sktransfer._layers": (
        "sktransfer._torch._layers",
        "sktransfer._torch._held",
        "sktransfer._torch._transfer",
        "sktransfer._torch._probe",
    ),
    "sktransfer._lora": "sktransfer._torch._lora",
    "sktransfer._modules": "sktransfer._torch._modules",
    "sktransfer._outputs": "sktransfer._fit._outputs",
    "sktransfer._partial": "sktransfer._estimators._partial",
    "sktransfer._pipeline": "sktransfer._estimators._pipeline",
    "sktransfer._plot": "sktransfer._selection._plot",
    "sktransfer._predstore": "sktransfer._frozen_stage._predstore",
    "sktransfer._pretrained": "sktransfer._pretrained._record",
    "sktransfer._progress": "sktransfer._fit._progress",
    "sktransfer._regressor": "sktransfer._estimators._regressor",
    "sktransfer._repr": "sktransfer._estimators._repr",
    "sktransfer._safety": "sktransfer._skorch._safety",
    "sktransfer._select": "sktransfer._selection._select",
    "sktransfer._source": "sktransfer._estimators._source",
    "sktransfer._step": "sktransfer._skorch._step",
    "sktransfer._stopping": "sktransfer._fit._stopping",
    "sktransfer._store": "sktransfer._frozen_stage._store",
    "sktransfer._targets": "sktransfer._estimators._targets",
    "sktransfer._text": "sktransfer._skorch._text",
    "sktransfer._trust": "sktransfer._skorch._trust",
    "sktransfer._unsupervised": "sktransfer._selection._unsupervised",
    "sktransfer._validation": "sktransfer._fit._validation",
    "sktransfer._weights": "sktransfer._skorch._weights",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):  # noqa: D102
        if isinstance(self.new, str):
            return importlib.import_module(self.new)
        parts = [importlib.import_module(name) for name in self.new]
        module = types.ModuleType(spec.name, f"0.1.0's module, now {self.new}.")

        def __getattr__(name):  # noqa: N807 (PEP 562)
            for part in parts:
                if hasattr(part, name):
                    return getattr(part, name)
            msg = f"module {spec.name!r} has no attribute {name!r}"
            raise AttributeError(msg)

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module) -> None:  # noqa: D102
        return None


class _LegacyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        new = OLD_TO_NEW.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Resolve 0.1.0's module paths to today's (idempotent)."""
    if not any(isinstance(f, _LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(_LegacyFinder())
