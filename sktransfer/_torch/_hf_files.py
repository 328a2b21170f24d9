"""Hugging Face models and tokenizers loaded from local directories, once.

``transformers`` is imported only here and in the modules that call
:func:`import_transformers`, and only when a Hugging Face model is used.
"""

from __future__ import annotations

import copy
import json
import os

_INSTALL = (
    'Hugging Face models need the optional packages of the "text" extra: '
    'pip install ".[text]" from a clone of sktransfer (transformers and tokenizers).'
)


def import_transformers():
    """Return ``transformers``, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover (installed in the test suite)
        raise ImportError(_INSTALL) from exc
    return transformers


def _check_dir(path, what):
    if not os.path.isdir(path):
        msg = (
            f"No {what} at {path!r}: the directory does not exist. net (or "
            "HuggingFaceNet(model)) must name a local directory written by "
            "save_pretrained (config.json, the weights, the tokenizer files); "
            "nothing is downloaded (local_files_only=True)."
        )
        raise FileNotFoundError(msg)


_LOADED: dict = {}


def _load(what, path, local_files_only):
    """Load a model or tokenizer from ``path`` (kept for later copies)."""
    transformers = import_transformers()
    if local_files_only:
        _check_dir(path, what)
    # The files' modification times are in the key: a model saved again to
    # the same directory is loaded again.
    stamps = (
        tuple(
            sorted(
                (entry.name, entry.stat().st_mtime_ns)
                for entry in os.scandir(path)
                if entry.is_file()
            )
        )
        if os.path.isdir(path)
        else ()
    )
    key = (what, os.path.realpath(path), local_files_only, stamps)
    if key in _LOADED:
        # A copy for every build: a fit must never change the weights that
        # later estimators load from the same directory.
        return copy.deepcopy(_LOADED[key]) if what == "model" else _LOADED[key]
    try:
        if what == "tokenizer":
            loaded = transformers.AutoTokenizer.from_pretrained(
                path, local_files_only=local_files_only
            )
        else:
            auto = transformers.AutoModel
            if _is_sequence_classifier(_config(path)):
                auto = transformers.AutoModelForSequenceClassification
            loaded = auto.from_pretrained(path, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        msg = (
            f"Could not load the {what} from {path!r} with local files only: "
            f"{exc}. The directory needs the files save_pretrained writes "
            "(config.json and model.safetensors for a model; tokenizer.json or "
            "vocab files for a tokenizer)."
        )
        error = FileNotFoundError if isinstance(exc, OSError) else ValueError
        raise error(msg) from exc
    _LOADED[key] = loaded  # kept once; every build copies a model (never shared)
    return copy.deepcopy(loaded) if what == "model" else loaded


def _config(path):
    """Return the ``config.json`` of a ``save_pretrained`` directory, or {}."""
    try:
        with open(os.path.join(os.fspath(path), "config.json")) as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}


def _is_sequence_classifier(config, default=()):
    """Whether ``architectures`` (else ``default``) name a sequence classifier."""
    architectures = config.get("architectures") or list(default)
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def output_labels(model):
    """Return the class names of a ``...ForSequenceClassification`` model's outputs.

    ``model`` is a ``save_pretrained`` directory or a model instance; its
    ``config.id2label``, in output order, unless the names are the defaults
    (``LABEL_0``, ...) or the model is not a sequence classifier. None then.
    """
    if isinstance(model, (str, os.PathLike)):
        config = _config(model)
    else:
        config = getattr(getattr(model, "config", None), "to_dict", dict)()
    if not _is_sequence_classifier(config, default=[type(model).__name__]):
        return None
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    names = [id2label.get(i) for i in range(len(id2label))]
    if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names
