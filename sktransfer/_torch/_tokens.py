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

from torch import fx, nn


@fx.wrap  # one call in a torch.fx graph: the cut length is a Python int
def unpack(X):
    """Token ids and attention mask of packed ``X``, cut to the batch's longest text.

    Wrapped for ``torch.fx`` (:func:`torch.fx.wrap`): a traced
    :class:`TokenNet` calls it as one function, whose int length tracing
    could not follow, and traces through the user's network after it.
    """
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
    when ``module.forward`` has an ``attention_mask`` parameter: int64
    tensors of shape (batch, length), padded on the right with the
    tokenizer's padding id (the mask is 1 on tokens). Otherwise it calls
    ``module(ids)`` with every text padded to ``max_length``: a network that
    cannot see the mask sees the padding, so its output for a text must not
    depend on how long the other texts of its batch are.

    ``torch.fx`` traces it through to the user's layers (:func:`unpack` is
    one call, the module's ``forward`` is traced as the module's own), so a
    frozen leading stage of the user's network is found and cached as it is
    for the same network on integer arrays; :attr:`network_name` names the
    user's network in the reason when tracing fails.

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

    @property
    def network_name(self):
        """The class name of the user's network (named in messages)."""
        return type(self.__dict__["inner"]).__name__

    def train(self, mode=True):
        """Set training mode (the module's own flag too)."""
        super().train(mode)
        self.__dict__["inner"].training = mode
        return self

    def forward(self, X):
        """Return the module's outputs for packed tokens ``X`` (batch, 2, length)."""
        inner = self.__dict__["inner"]
        if not self.with_mask:
            # A network that cannot see the mask sees the padding: every text
            # padded to max_length, so that its output does not depend on the
            # other texts of its batch (as a batch cut to its longest would).
            ids = X[:, 0].long()
            return inner.forward(ids) if isinstance(ids, fx.Proxy) else inner(ids)
        ids, mask = unpack(X)
        # Traced by torch.fx: the module's forward, whose layers are this
        # module's own (a call of the module itself is not in the module tree).
        if not isinstance(ids, fx.Proxy):
            return inner(input_ids=ids, attention_mask=mask)
        out = inner.forward(input_ids=ids, attention_mask=mask)
        if not mask.node.users:  # a mask the network does not read: no input
            mask.node.graph.erase_node(mask.node)  # read past the frozen stage
        return out
