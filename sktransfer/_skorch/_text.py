"""Texts and token dicts as inputs: recognised, checked and packed for the network.

The estimators call :func:`encode_inputs` first thing in ``fit``,
``fit_source``, ``predict`` and ``transform``. Raw texts (a list, 1-D array or
pandas Series of strings) are tokenized there, inside the estimator, so that
cross-validation folds and grid-search candidates slice raw texts; a dict of
``input_ids`` and ``attention_mask`` arrays (what a tokenizer returns) is
taken as it is. Both become one packed array of shape (n_samples, 2,
max_length): the token ids and the attention mask of each text, padded on the
right. The network (:class:`sktransfer._torch._hf.TransformerNet`) cuts each batch to
its own longest text, so the encoder never runs over padding beyond that
(dynamic padding, as ``DataCollatorWithPadding``) while the rest of the data
path (batching, validation split, sample weights, probes) sees a plain array.
Any other input passes through unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from scipy import sparse
from torch import nn

from .._common import warn_at_user
from .._torch import _hf, _hf_inputs
from .._torch._tokens import TokenNet
from ._text_checks import as_texts, check_token_ids, not_strings, warn_unmasked

# The keys of a tokenizer's output that the network reads.
_TOKEN_KEYS = ("input_ids", "attention_mask")


def is_text(X):
    """Whether ``X`` is a sequence of strings (list, tuple, 1-D array, Series)."""
    if isinstance(X, str):
        return False
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(x, str) for x in X)
    dtype = getattr(X, "dtype", None)
    ndim = getattr(X, "ndim", None)
    if dtype is None or ndim != 1:
        return False
    if dtype.kind == "U":
        return True
    if dtype.kind == "O" or str(dtype) == "string":
        values = list(X)
        return len(values) > 0 and all(isinstance(x, str) for x in values)
    return False


def is_token_dict(X):
    """Whether ``X`` is a mapping with ``input_ids`` (a tokenizer's output)."""
    return _is_dict(X) and "input_ids" in X


def _is_dict(X):
    """Whether X maps names to arrays (a SciPy DOK matrix is a dict too: not it)."""
    return isinstance(X, Mapping) and not sparse.issparse(X)


def _text_error(estimator, X):
    what = "a dict of token arrays" if is_token_dict(X) else "texts"
    module = getattr(estimator.net, "module", None)
    if _hf.as_spec(module) is not None:  # a skorch net around a Hugging Face one
        msg = (
            f"{type(estimator).__name__} got {what} and a "
            f"{type(estimator.net).__name__} around a Hugging Face model; give the "
            "model itself as net (a directory or HuggingFaceNet), which takes "
            "texts. Its optimizer and optimizer_params set the optimizer "
            "(default torch.optim.AdamW, weight_decay=0.01), e.g. "
            "HuggingFaceNet(path, optimizer=torch.optim.SGD); set lr, "
            "max_epochs or batch_size on the estimator."
        )
        return TypeError(msg)
    msg = (
        f"{type(estimator).__name__} got {what}, but its net "
        f"({type(estimator.net).__name__}) takes numeric arrays. For texts, "
        "give a Hugging Face model as net: a local save_pretrained directory "
        "(net='path/to/model') or HuggingFaceNet(model, tokenizer=...)."
    )
    return TypeError(msg)


def encode_inputs(estimator, X, *, fitting=False):
    """Return ``X`` as the network takes it: texts and token dicts packed.

    Parameters
    ----------
    estimator : TransferClassifier or TransferRegressor
        Its ``net`` decides: a Hugging Face net (a path, a
        :class:`~sktransfer.HuggingFaceNet` or a model instance) takes texts
        and token dicts; any other net gets ``X`` unchanged, and texts or a
        token dict are then a TypeError.
    X : object
        What the user passed.
    fitting : bool, default=False
        Whether ``fit`` or ``fit_source`` called: it then sets ``n_truncated_``
        (how many texts ``max_length`` cut).

    Returns
    -------
    X : ndarray of shape (n_samples, 2, max_length) or X unchanged
        Token ids and attention masks, int64.
    """
    text, tokens = is_text(X), is_token_dict(X)
    spec = _hf.as_spec(estimator.net)
    if spec is None:
        if _is_dict(X):  # named inputs of forward, as skorch passes them
            layout = None if fitting else getattr(estimator, "_keyword_layout", None)
            if not fitting and layout is None:
                msg = (
                    f"{type(estimator).__name__} got a dict X, but was fitted on "
                    "an array; give X as fit saw it."
                )
                raise ValueError(msg)
            packed, layout = pack_keyword_inputs(X, layout)
            if fitting:
                estimator._keyword_layout = layout
            return packed
        if text:
            raise _text_error(estimator, X)
        if fitting:
            estimator.__dict__.pop("_keyword_layout", None)
        return X
    if not (text or tokens):
        model = getattr(spec, "model", None)
        if isinstance(model, (str, os.PathLike)) and not os.path.isdir(model):
            # A string net that names no directory: probably not meant as one.
            msg = (
                f"net={model!r} is a string, which names the local directory of a "
                "Hugging Face model, but no such directory exists. net must be "
                f"None, a skorch {estimator._net_class.__name__}, a torch.nn.Module "
                "class or instance, a function returning a module, a "
                "HuggingFaceNet, or the path of a directory written by "
                "save_pretrained."
            )
            raise TypeError(msg)
        if _looks_like_packed(X):
            check_token_ids(spec, X, from_texts=False)
            return X
        if isinstance(X, (list, tuple)) and any(isinstance(x, str) for x in X):
            as_texts(X)  # names the first entry that is not a string
        msg = (
            f"{type(estimator).__name__} with a Hugging Face net takes texts (a "
            "list, 1-D array or pandas Series of strings) or a dict of "
            "'input_ids' and 'attention_mask' arrays; got "
            f"{type(X).__name__}{not_strings(X)}"
            + (f" of shape {np.shape(X)}" if hasattr(X, "shape") else "")
            + "."
        )
        raise TypeError(msg)
    tokenizer = spec.load_tokenizer()
    max_length = spec.resolved_max_length(tokenizer)
    if text:
        if tokenizer is None:
            msg = (
                f"{type(estimator).__name__} got texts, but "
                f"{_hf_inputs.describe(spec.model)} comes without a tokenizer. "
                "Pass one: "
                "HuggingFaceNet(model, tokenizer=tokenizer_or_directory), or "
                "give token ids as a dict of 'input_ids' and 'attention_mask'."
            )
            raise ValueError(msg)
        packed, n_truncated = tokenize(tokenizer, as_texts(X), max_length)
    else:
        packed, n_truncated = pack_token_dict(X, max_length)
        if "attention_mask" not in X:  # every token counts: padding too?
            warn_unmasked(packed, _hf_inputs.pad_token_id(spec, tokenizer))
    check_token_ids(spec, packed, from_texts=text)
    rows = getattr(estimator, "_sample_shape", (None,))[0] if not fitting else None
    if rows == 3 and packed.shape[1] == 2:  # no token types: all zeros, as fit's
        packed = np.concatenate([packed, np.zeros_like(packed[:, :1])], axis=1)
    elif rows == 2 and packed.shape[1] == 3:
        msg = (
            "X has token_type_ids with non-zero values (sentence pairs), but "
            f"{type(estimator).__name__} was fitted without them; fit on "
            "sentence pairs too, or leave token_type_ids out."
        )
        raise ValueError(msg)
    if n_truncated:
        msg = (
            f"{n_truncated} of {len(packed)} texts have more than "
            f"max_length={max_length} tokens and were truncated to {max_length} "
            "(as the tokenizer truncates, on its truncation_side); set "
            "net__max_length (HuggingFaceNet(max_length=...)) to keep more."
        )
        warn_at_user(msg, UserWarning)
    if fitting:
        estimator.n_truncated_ = n_truncated
    return packed


def length_order(module, X):
    """Rows of packed tokens grouped by length for prediction, or None.

    For a text network (:class:`~sktransfer._torch._hf.TransformerNet`,
    :class:`~sktransfer._torch._tokens.TokenNet`) and packed tokens ``X``,
    the permutation that sorts the texts from longest to shortest (stable),
    so that each batch, cut to its longest text, holds texts of similar
    lengths; the caller puts the outputs back in the input order. None when
    the order is already so, or for any other network or input.
    """
    if not isinstance(module, (_hf.TransformerNet, TokenNet)):
        return None
    if not (isinstance(X, np.ndarray) and _looks_like_packed(X) and len(X) > 1):
        return None
    order = np.argsort(-X[:, 1].sum(1), kind="stable")
    return None if np.array_equal(order, np.arange(len(X))) else order


def in_length_order(module, X, run):
    """Return ``run(rows)``'s outputs for ``X``, the texts run grouped by length.

    ``run`` takes rows and returns the module's outputs for them (a tensor or
    a tuple of tensors, one row per input row). For a text network and packed
    tokens (:func:`length_order`), it gets the rows from longest to shortest
    text, and its outputs are put back in the input order; otherwise it gets
    ``X`` itself. ``run``'s second argument says whether the rows are a copy.
    """
    order = length_order(module, X)
    if order is None:
        return run(X, False)
    result = run(X[order], True)
    inverse = torch.as_tensor(order).argsort()
    if isinstance(result, tuple):
        return tuple(part[inverse.to(part.device)] for part in result)
    return result[inverse.to(result.device)]


def _looks_like_packed(X):
    """Already packed tokens (the estimators' own arrays, e.g. from a cache)."""
    shape = getattr(X, "shape", None)
    return shape is not None and len(shape) == 3 and shape[1] in (2, 3)


def tokenize(tokenizer, texts, max_length):
    """Tokenize ``texts`` and pack them; return the array and the truncated count.

    Each text is encoded with its special tokens and cut to ``max_length``
    tokens exactly as ``tokenizer(text, truncation=True,
    max_length=max_length)`` cuts it (the tokenizer's own special tokens
    kept, if it adds any); the ids and the attention mask (1 on tokens) are
    padded on the right with the tokenizer's padding id up to ``max_length``.

    Returns
    -------
    packed : ndarray of shape (n_texts, 2, max_length), int64
    n_truncated : int
        How many texts had more than ``max_length`` tokens.
    """
    # verbose=False: no "sequence length is longer" warning; cut just below.
    encoded = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(encoded) if len(ids) > max_length]
    if long:  # cut as the tokenizer cuts (its closing special token, if any)
        cut = tokenizer(
            [texts[i] for i in long], truncation=True, max_length=max_length
        )
        for i, ids in zip(long, cut["input_ids"], strict=True):
            encoded[i] = ids
    pad = tokenizer.pad_token_id
    pad = 0 if pad is None else int(pad)
    n_truncated = len(long)
    packed = np.zeros((len(texts), 2, max_length), dtype=np.int64)
    packed[:, 0] = pad
    for i, ids in enumerate(encoded):
        packed[i, 0, : len(ids)] = ids
        packed[i, 1, : len(ids)] = 1
    return packed, n_truncated


def pack_token_dict(tokens, max_length):
    """Pack a tokenizer's output (``input_ids``, ``attention_mask``) to one array.

    The rows may be padded on the right to any common length (or be lists of
    different lengths); a missing ``attention_mask`` means every token counts,
    padding included (the caller warns if a row holds the padding id).
    Rows longer than ``max_length`` are a ValueError (a dict holds ids that
    were tokenized already; cutting them would drop the closing token).
    ``token_type_ids`` with a non-zero value (sentence pairs) become a third
    row, which the network passes to the model; all zeros are the model's
    default and are dropped.
    """
    unknown = sorted(set(tokens) - {*_TOKEN_KEYS, "token_type_ids"})
    if unknown:
        msg = (
            f"The dict of token arrays has keys {unknown} that the Hugging Face "
            f"net does not read; it takes {list(_TOKEN_KEYS)} and "
            "token_type_ids."
        )
        raise ValueError(msg)
    ids = [np.asarray(row).ravel() for row in _rows(tokens["input_ids"])]
    types = tokens.get("token_type_ids")
    types = None if types is None else [np.ravel(row) for row in _rows(types)]
    masks = tokens.get("attention_mask")
    masks = (
        [np.ones_like(row) for row in ids]
        if masks is None
        else [np.asarray(row).ravel() for row in _rows(masks)]
    )
    if len(masks) != len(ids):
        msg = (
            f"input_ids has {len(ids)} rows but attention_mask {len(masks)}; "
            "they must be the same texts."
        )
        raise ValueError(msg)
    packed = np.zeros((len(ids), 3, max_length), dtype=np.int64)
    for i, (row, mask) in enumerate(zip(ids, masks, strict=True)):
        given = {"attention_mask": mask}
        if types is not None:
            given["token_type_ids"] = types[i] if i < len(types) else None
        for key, other in given.items():
            if other is None or row.shape != other.shape:
                size = "no row" if other is None else other.size
                msg = (
                    f"Row {i} of input_ids has {row.size} tokens but its {key} {size}."
                )
                raise ValueError(msg)
        if row.dtype.kind not in "iub" and not np.array_equal(row, np.round(row)):
            msg = f"input_ids must be integer token ids; row {i} has {row[:5]}."
            raise ValueError(msg)
        keep = np.flatnonzero(mask)
        n_tokens = int(keep[-1]) + 1 if keep.size else 0
        if n_tokens > max_length:
            msg = (
                f"Row {i} of input_ids has {n_tokens} tokens, more than "
                f"max_length={max_length}. Tokenize with truncation to "
                "max_length, or raise net__max_length."
            )
            raise ValueError(msg)
        if keep.size and not np.all(mask[:n_tokens] != 0):
            msg = (
                f"Row {i} of attention_mask has zeros before its last token; "
                "pad on the right (tokenizer.padding_side='right')."
            )
            raise ValueError(msg)
        packed[i, 0, :n_tokens] = row[:n_tokens]
        packed[i, 1, :n_tokens] = 1
        if types is not None:
            packed[i, 2, :n_tokens] = types[i][:n_tokens]
    return (packed if packed[:, 2].any() else packed[:, :2]), 0


def _rows(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return list(value)


def tfidf_candidate(logistic):
    """Return the TF-IDF + logistic regression candidate of a transfer search.

    Word unigrams and bigrams, sublinear term frequencies (Joachims 1998;
    scikit-learn's text classification example), then ``logistic`` (the
    linear probe's ``LogisticRegressionCV``, ``C`` chosen by an inner
    cross-validation), in the search's ``features`` → ``scaler`` → ``model``
    pipeline. Fitted on each fold's raw texts only.
    """
    from sklearn.base import clone
    from sklearn.feature_extraction.text import TfidfVectorizer

    return {
        "features": [TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))],
        "scaler": ["passthrough"],
        "model": [clone(logistic)],
    }


# ------------------------------------------- dicts of arrays for other networks


def pack_keyword_inputs(X, layout=None):
    """Pack a dict of arrays for a network whose ``forward`` takes them by name.

    Each array (n_samples, ...) is flattened to (n_samples, d) and the arrays
    are put side by side, in the dict's order; :class:`KeywordInputs` undoes
    it batch by batch and calls ``forward(**arrays)``, as skorch passes a dict
    ``X``. Integer and boolean arrays come back as int64, others as the
    network's floating dtype.

    Parameters
    ----------
    X : dict of str to array-like
        The inputs, each with the same number of rows.
    layout : tuple of (str, tuple, bool), default=None
        What ``fit`` saw (key, sample shape, integer or not); the dict must
        match it. None: taken from ``X``.

    Returns
    -------
    packed : ndarray of shape (n_samples, total width)
        int64 when every array is integer, else float32.
    layout : tuple of (str, tuple, bool)
    """
    arrays = {}
    for key, value in X.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.dtype.kind not in "biuf" or value.ndim == 0:
            msg = (
                f"X[{key!r}] must be a numeric array of shape (n_samples, ...); got "
                f"dtype {value.dtype} and shape {value.shape}."
            )
            raise ValueError(msg)
        arrays[key] = value
    rows = {key: len(value) for key, value in arrays.items()}
    if len(set(rows.values())) != 1:
        msg = f"The arrays of dict X have different numbers of rows: {rows}."
        raise ValueError(msg)
    found = tuple(
        (key, tuple(value.shape[1:]), value.dtype.kind in "biu")
        for key, value in arrays.items()
    )
    if layout is not None and [(k, s) for k, s, _ in found] != [
        (k, s) for k, s, _ in layout
    ]:
        msg = (
            "dict X does not match what fit saw: got keys and sample shapes "
            f"{[(k, s) for k, s, _ in found]}, fit had "
            f"{[(k, s) for k, s, _ in layout]}."
        )
        raise ValueError(msg)
    layout = found if layout is None else layout
    integer = all(is_int for _, _, is_int in layout)
    dtype = np.int64 if integer else np.float32
    n = next(iter(rows.values()))
    parts = [arrays[key].reshape(n, -1).astype(dtype, copy=False) for key, *_ in layout]
    return np.concatenate(parts, axis=1), layout


class KeywordInputs(nn.Module):
    """A network whose ``forward`` takes named arrays, fed packed inputs.

    It shares ``module``'s parameters, buffers and submodules (its
    ``state_dict`` keys are the same, so ``frozen`` patterns and saved weights
    are unchanged), splits each packed batch back into the named arrays
    (:func:`pack_keyword_inputs`) and calls ``module(**arrays)``.

    Parameters
    ----------
    module : torch.nn.Module
        The user's network, used as it is.
    layout : tuple of (str, tuple, bool)
        Key, sample shape and integer-or-not of each array, in packing order.
    """

    def __init__(self, module, layout):
        super().__init__()
        self.__dict__["inner"] = module
        self.__dict__["_parameters"] = module._parameters
        self.__dict__["_buffers"] = module._buffers
        self.__dict__["_modules"] = module._modules
        self.layout = layout

    def train(self, mode=True):
        super().train(mode)
        self.__dict__["inner"].training = mode
        return self

    def forward(self, X):
        """Call the wrapped network with the named arrays of packed ``X``."""
        arrays, start = {}, 0
        floating = X.dtype if X.is_floating_point() else torch.float32
        for key, shape, is_int in self.layout:
            width = int(np.prod(shape)) if shape else 1
            part = X[:, start : start + width].reshape(-1, *shape)
            arrays[key] = part.long() if is_int else part.to(floating)
            start += width
        return self.__dict__["inner"](**arrays)


def keyword_net(net, layout):
    """Wrap the module of skorch ``net`` (instance or class) in KeywordInputs."""
    import functools

    module = net.module
    if isinstance(module, nn.Module):
        module = KeywordInputs(module, layout)
    else:
        module = functools.partial(_build_keyword_module, module, layout)
    params = net.get_params(deep=False)
    params.pop("module")
    return type(net)(module, **params)


def _build_keyword_module(factory, layout, **kwargs):
    return KeywordInputs(factory(**kwargs), layout)
