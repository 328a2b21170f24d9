"""What a Hugging Face model takes: its keyword inputs and how many tokens.

:func:`model_inputs` turns a packed batch into the model's keyword arguments
(``input_ids``, ``attention_mask`` and, for sentence pairs, ``token_type_ids``).

:func:`resolve_max_length` is :meth:`HuggingFaceNet.resolved_max_length
<sktransfer.HuggingFaceNet.resolved_max_length>`. The default is the
smallest of 512, the tokenizer's ``model_max_length``, a sentence-transformers
directory's ``max_seq_length`` (``sentence_bert_config.json``, what
``SentenceTransformer`` truncates to: 256 for all-MiniLM-L6-v2) and the
model's position limit; a ``max_length`` beyond the position limit is a
ValueError naming both, where it would otherwise fail deep in the model.
:func:`describe` names a model in messages without its whole ``repr``;
:func:`not_a_skorch_net` says why skorch settings cannot be set on the spec.
"""

from __future__ import annotations

import inspect
import json
import os

from torch import nn

from ._hf_settings import check_max_length

# Models whose position ids start after the padding id (``padding_idx + 1``, as
# RoBERTa's ``create_position_ids_from_input_ids``): that many of their
# ``max_position_embeddings`` never hold a token (514 - 2 = 512 for RoBERTa).
_PADDING_OFFSET = frozenset(
    {
        "camembert",
        "data2vec-text",
        "ibert",
        "longformer",
        "mpnet",
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
    }
)


def describe(model):
    """Name ``model`` in a message: its path, or its class and config's name."""
    if isinstance(model, (str, os.PathLike)):
        return f"the model at {os.fspath(model)!r}"
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", "") or getattr(config, "model_type", "")
    return f"the model {type(model).__name__}" + (f" ({name!r})" if name else "")


def not_a_skorch_net(spec, names):
    """Return the message for settings ``names`` that a HuggingFaceNet does not have."""
    return (
        f"HuggingFaceNet has no parameter {', '.join(map(repr, names))}; it takes "
        f"{sorted(spec.get_params(deep=False))}. It is the spec of a Hugging Face "
        "network, not a skorch net: set the optimizer with its optimizer and "
        "optimizer_params parameters (net__optimizer=torch.optim.SGD, "
        "net__optimizer_params={'weight_decay': 0.0}); the default is "
        "torch.optim.AdamW (weight_decay=0.01). Set lr, shared_lr_scale, "
        "layer_decay, l2sp, max_epochs or batch_size on the estimator, e.g. "
        "TransferClassifier(net, lr=2e-5)."
    )


def _directory(spec):
    """Return the model's local directory, or None (an instance not saved to one)."""
    model = spec.model
    path = model if isinstance(model, (str, os.PathLike)) else None
    path = path or getattr(model, "name_or_path", None)
    return os.fspath(path) if path and os.path.isdir(path) else None


def _config(spec):
    """Return the model's config as a dict (``config.json``), or {} if unknown."""
    config = getattr(spec.model, "config", None)
    if config is not None:
        return config.to_dict()
    path = _directory(spec)
    file = os.path.join(path, "config.json") if path else None
    if file is None or not os.path.isfile(file):
        return {}
    with open(file) as handle:
        return json.load(handle)


def position_limit(config):
    """Return the most tokens the model's position embeddings take, or None.

    Parameters
    ----------
    config : dict
        The model's ``config.json``.

    Returns
    -------
    limit : int or None
        ``max_position_embeddings`` (``n_positions`` for GPT-2), less
        ``pad_token_id + 1`` for RoBERTa-like models; None for a model
        without absolute positions.
    """
    limit = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(limit, int):
        return None
    if config.get("model_type") in _PADDING_OFFSET:
        limit -= int(config.get("pad_token_id") or 0) + 1
    return limit


def _sentence_transformers_length(spec):
    path = _directory(spec)
    file = os.path.join(path, "sentence_bert_config.json") if path else None
    if file is None or not os.path.isfile(file):
        return None
    with open(file) as handle:
        length = json.load(handle).get("max_seq_length")
    return length if isinstance(length, int) else None


def resolve_max_length(spec, tokenizer):
    """Return the number of tokens texts are cut to for ``spec`` (a HuggingFaceNet).

    Raises
    ------
    ValueError
        If ``spec.max_length`` is not None or an int, is too small to hold the
        tokenizer's special tokens and one token of text, or is more than the
        model's position limit.
    """
    check_max_length(spec.max_length, tokenizer)  # at fit, before any change
    config = _config(spec)
    limit = position_limit(config)
    if spec.max_length is not None:
        if limit is not None and spec.max_length > limit:
            offset = config.get("model_type") in _PADDING_OFFSET
            total = config.get("max_position_embeddings", config.get("n_positions"))
            less = ", less its padding offset" if offset else ""
            msg = (
                f"max_length={spec.max_length} is more than the {limit} tokens "
                f"that {describe(spec.model)} takes (its config's "
                f"max_position_embeddings={total}{less}). Set max_length to at "
                f"most {limit}."
            )
            raise ValueError(msg)
        return int(spec.max_length)
    candidates = [512, _sentence_transformers_length(spec), limit]
    model_max = getattr(tokenizer, "model_max_length", None) if tokenizer else None
    candidates.append(model_max if isinstance(model_max, int) else None)
    return min(c for c in candidates if c is not None)


def pad_token_id(spec, tokenizer):
    """Return the padding id of the tokenizer, else of the model's config, or None."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = _config(spec).get("pad_token_id")
    return int(pad) if isinstance(pad, int) else None


def vocab_size(spec):
    """Return how many token ids the model embeds, or None if unknown.

    The input embeddings' ``num_embeddings`` of a model instance (a
    ``transformers`` model, or a network of one's own with
    ``get_input_embeddings``), else the config's ``vocab_size``.
    """
    model = spec.model
    if isinstance(model, nn.Module):
        get = getattr(model, "get_input_embeddings", None)
        try:
            embeddings = get() if callable(get) else None
        except NotImplementedError:
            embeddings = None
        size = getattr(embeddings, "num_embeddings", None)
        if isinstance(size, int):
            return size
        if not hasattr(model, "config"):
            return None  # a network of one's own: its embeddings are unknown
    size = _config(spec).get("vocab_size")
    return size if isinstance(size, int) else None


def model_inputs(model, X, ids, mask):
    """Return the keyword inputs of ``model``: ``ids``, ``mask`` and X's token types.

    ``ids`` and ``mask`` are packed ``X``'s, cut to the batch's longest text; a
    third row of ``X`` holds the ``token_type_ids`` of sentence pairs.
    """
    inputs = {"input_ids": ids, "attention_mask": mask}
    if X.shape[1] > 2:  # sentence pairs' token_type_ids (_text.pack_token_dict)
        inputs["token_type_ids"] = types = X[:, 2, : ids.shape[1]].long()
        n_types = getattr(model.config, "type_vocab_size", None)
        low, high = int(types.min()), int(types.max())
        if "token_type_ids" not in inspect.signature(model.forward).parameters:
            msg = (
                f"The token dict has token_type_ids (sentence pairs, values up to "
                f"{high}), but {type(model).__name__} takes none: tokenize for "
                "this model (without token_type_ids)."
            )
            raise ValueError(msg)
        if n_types is not None and (low < 0 or high >= n_types):
            bad = low if low < 0 else high
            msg = (
                f"The token dict has a token_type_ids value of {bad}, but "
                f"{type(model).__name__} takes values 0..{n_types - 1} (its "
                f"config's type_vocab_size={n_types}): "
                + (
                    "tokenize for this model (without token_type_ids)."
                    if n_types == 1
                    else "0 on the first text and 1 on the second, as its "
                    "tokenizer gives them (tokenizer(first, second, "
                    "return_token_type_ids=True))."
                )
            )
            raise ValueError(msg)
    return inputs
