"""Checks of packed token ids for a Hugging Face net, and what texts are not.

:func:`encode_inputs <sktransfer._skorch._text.encode_inputs>` calls them on
every packed array (fit, predict, transform, ``PretrainedFeatures``), before
the estimator changes:

- :func:`check_token_ids`: each id is in ``[0, vocab_size)`` of the model,
  where it would otherwise be an ``IndexError`` deep in the embedding layer;
- :func:`warn_unmasked`: a token dict without ``attention_mask`` whose
  ``input_ids`` hold the padding id, as ``transformers`` warns ("We strongly
  recommend passing in an `attention_mask`");
- :func:`as_texts` and :func:`not_strings`: what a sequence that is not
  texts holds (bytes, say), in its TypeError.
"""

from __future__ import annotations

import numpy as np

from .._common import warn_at_user
from .._torch import _hf_inputs


def check_token_ids(spec, packed, *, from_texts):
    """Raise a ValueError for a token id outside the model's vocabulary.

    Parameters
    ----------
    spec : HuggingFaceNet
        Its model's vocabulary size (:func:`~sktransfer._torch._hf_inputs.vocab_size`)
        bounds the ids; no check when it is unknown (a network of one's own
        without ``get_input_embeddings``).
    packed : ndarray of shape (n_samples, 2 or 3, length)
        Packed tokens: row 0 the ids, row 1 the attention mask.
    from_texts : bool
        Whether the estimator's tokenizer made the ids (the message then
        names it rather than the user's dict).

    Raises
    ------
    ValueError
        Naming the largest (or smallest negative) id, the vocabulary size and
        the likely cause: ids from another tokenizer than the model's.
    """
    size = _hf_inputs.vocab_size(spec)
    if size is None or not isinstance(packed, np.ndarray) or packed.size == 0:
        return
    ids = packed[:, 0][packed[:, 1] != 0]
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if 0 <= low and high < size:
        return
    bad, which = (low, "smallest") if low < 0 else (high, "largest")
    where = "the tokenizer gives" if from_texts else "input_ids holds"
    cause = (
        "the tokenizer is not the model's; pass the model's own "
        "(HuggingFaceNet(model, tokenizer=...))"
        if from_texts
        else "the ids probably come from another tokenizer than the model's; "
        "tokenize with the model's own tokenizer"
    )
    msg = (
        f"{where} token id {bad} (the {which}), but "
        f"{_hf_inputs.describe(spec.model)} embeds {size} tokens (ids 0.."
        f"{size - 1}, its vocab_size): {cause}."
    )
    raise ValueError(msg)


def warn_unmasked(packed, pad_id):
    """Warn when token ids given without ``attention_mask`` hold the padding id.

    Without a mask every token counts, padding included (as a
    ``transformers`` model without ``attention_mask``): the encoder attends
    to the padding and mean pooling averages it in, so a padded row's outputs
    differ from those of its text. Ids without the padding id (texts
    truncated but not padded) are taken silently.

    Parameters
    ----------
    packed : ndarray of shape (n_samples, 2 or 3, length)
        The dict's ids packed with an all-ones mask over each row.
    pad_id : int or None
        The tokenizer's (else the model config's) ``pad_token_id``; None: no
        check.
    """
    if pad_id is None:
        return
    counted = packed[:, 1] != 0
    n_padded = int(((packed[:, 0] == pad_id) & counted).any(axis=1).sum())
    if not n_padded:
        return
    msg = (
        f"{n_padded} of {len(packed)} rows of input_ids hold the padding id "
        f"{pad_id}, but the dict has no attention_mask: every token counts, "
        "padding included (as in transformers without a mask), so these rows "
        "get other outputs than their texts. Pass the tokenizer's "
        "attention_mask too ({'input_ids': ..., 'attention_mask': ...}, as "
        "tokenizer(texts, padding=True) returns them), or the texts."
    )
    warn_at_user(msg, UserWarning)


def as_texts(X):
    """Return ``X`` as a list of strings; a TypeError names the first that is not."""
    texts = list(X)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            msg = (
                f"Texts must all be strings; entry {i} is {text!r} of type "
                f"{type(text).__name__}"
                + ("; decode bytes first." if isinstance(text, bytes) else ".")
            )
            raise TypeError(msg)
    return texts


def not_strings(X):
    """Say what ``X``'s entries are when they are not strings, or ''.

    Bytes (a list of ``b"..."`` or a NumPy ``S`` array) are named with how to
    decode them.
    """
    dtype = getattr(X, "dtype", None)
    if dtype is not None and dtype.kind == "S":
        return " of bytes; decode them to strings first (np.char.decode(X, 'utf-8'))"
    if not isinstance(X, (list, tuple)) and not (
        dtype is not None and dtype.kind == "O" and getattr(X, "ndim", 0) == 1
    ):
        return ""
    kinds = sorted({type(x).__name__ for x in X})
    if not kinds:
        return ""
    found = f" of {', '.join(kinds)}"
    if "bytes" in kinds:
        found += "; decode bytes to strings first ([t.decode('utf-8') for t in X])"
    return found
