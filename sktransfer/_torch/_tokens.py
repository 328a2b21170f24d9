"""Packed token arrays, and a user's own network on tokenized texts.

The estimators pack texts and token dicts into one array of shape
(n_samples, 2, max_length): the token ids and the attention mask of each text,
padded on the right (``sktransfer._skorch._text``). :func:`unpack` cuts a
batch of it to its longest text (dynamic padding); :class:`TokenNet` feeds
it to a network the user wrote (an ``nn.Embedding`` and an ``nn.LSTM``, say),
given as ``HuggingFaceNet(module, tokenizer=...)``.
"""

from __future__ import annotations

import inspect

from torch import nn


def unpack(X):
    """Token ids and attention mask of packed ``X``, cut to the batch's longest text."""
    ids, mask = X[:, 0].long(), X[:, 1].long()
    length = int(mask.sum(1).max().item()) if len(mask) else 1
    length = max(length, 1)
    return ids[:, :length], mask[:, :length]


class TokenNet(nn.Module):
    """A user's network on packed tokens: ``forward(input_ids[, attention_mask])``.

    It shares ``module``'s parameters, buffers and submodules (the same
    ``state_dict`` keys, so ``frozen`` patterns, ``head="auto"`` and saved
    weights use the module's own names), cuts each packed batch to its
    longest text and calls ``module(input_ids=ids, attention_mask=mask)``
    when ``module.forward`` has an ``attention_mask`` parameter, else
    ``module(ids)``: int64 tensors of shape (batch, length), padded on the
    right with the tokenizer's padding id (the mask is 1 on tokens).

    Parameters
    ----------
    module : torch.nn.Module
        The network, used as it is (not copied).
    """

    def __init__(self, module):
        super().__init__()
        self.__dict__["inner"] = module
        for name in ("_parameters", "_buffers", "_modules"):
            self.__dict__[name] = getattr(module, name)
        self.__dict__["_non_persistent_buffers_set"] = (
            module._non_persistent_buffers_set
        )
        forward = inspect.signature(module.forward).parameters
        self.with_mask = "attention_mask" in forward

    def train(self, mode=True):
        """Set training mode (the module's own flag too)."""
        super().train(mode)
        self.__dict__["inner"].training = mode
        return self

    def forward(self, X):
        """Return the module's outputs for packed tokens ``X`` (batch, 2, length)."""
        ids, mask = unpack(X)
        inner = self.__dict__["inner"]
        return (
            inner(input_ids=ids, attention_mask=mask) if self.with_mask else inner(ids)
        )
