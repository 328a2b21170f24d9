"""Hugging Face ``transformers`` backbones as the network of a transfer estimator.

:class:`HuggingFaceNet` is a declarative spec (a path or a model instance, the
tokenizer, ``max_length``, ``pooling``) that an estimator's ``net`` takes; a
string ``net`` naming a ``save_pretrained`` directory means
``HuggingFaceNet(path)``. At ``fit`` it becomes a :class:`TransformerNet`, a
plain :class:`torch.nn.Module` whose parameters carry the model's own names
(``embeddings.*``, ``encoder.layer.N.*``) plus a ``head`` on the pooled
output, so ``frozen``, ``head="auto"``, L2-SP and layer decay use them.

``transformers`` is imported only here, and only when a Hugging Face model is
used (``pip install ".[text]"`` from a clone).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import torch
from sklearn.base import BaseEstimator
from torch import nn

from .._compat import StrOptions
from ._held import eval_frozen
from ._hf_files import _load
from ._hf_inputs import model_inputs, not_a_skorch_net, resolve_max_length
from ._hf_settings import check_spec, enable_checkpointing, refuse_own_network
from ._tokens import TokenNet, unpack

_POOLING = ("mean", "first", "cls")


def is_hf_model(obj):
    """Whether ``obj`` is a ``transformers`` model instance (without importing it)."""
    return any(
        cls.__module__.startswith("transformers.") and cls.__name__ == "PreTrainedModel"
        for cls in type(obj).__mro__
    )


class HuggingFaceNet(BaseEstimator):
    """A Hugging Face ``transformers`` model as the network of a transfer estimator.

    Give it as ``net`` (``TransferClassifier(HuggingFaceNet("path"))``); a
    string ``net`` is short for ``HuggingFaceNet(net)``. The estimator then
    takes raw texts (a list, 1-D array or pandas Series of strings) in
    ``fit``, ``predict``, ``transform`` and ``score``, tokenizes them itself
    (so cross-validation folds and grid-search candidates slice raw texts),
    and also takes a dict of ``input_ids`` and ``attention_mask`` arrays as a
    tokenizer returns them. Each batch runs only up to its own longest text
    (dynamic padding, as ``transformers``' ``DataCollatorWithPadding``).

    Read more in the :ref:`User Guide <text>`.

    The network is the model's encoder, a pooling of its last hidden states,
    and a new ``nn.Linear`` head on the pooled vector, sized for the target;
    for an ``...ForSequenceClassification`` model, the model itself, with its
    ``classifier`` (or ``score``) layer as the head. Parameter names are the
    model's own (``embeddings.*``, ``encoder.layer.0.*``, ``head.*``), so
    ``frozen=("embeddings.*", "encoder.layer.[0-3].*")`` freezes the
    embeddings and the first four blocks, and ``layer_decay`` counts the
    transformer blocks (``encoder.layer.N``) as layers.

    Its parameters are set as the estimator's nested ones:
    ``net__max_length``, ``net__pooling``, ``net__gradient_checkpointing``,
    in a grid search too.

    Parameters
    ----------
    model : str, os.PathLike, transformers.PreTrainedModel or torch.nn.Module
        A local directory in the ``save_pretrained`` layout (``config.json``,
        the weights, the tokenizer files), or a model instance. Its weights
        are the pretrained ones; they are copied, never modified. With a
        ``tokenizer``, also a network of one's own whose ``forward`` takes
        ``input_ids`` (int64, (batch, length), padded on the right) and
        optionally ``attention_mask``, e.g. an ``nn.Embedding`` and an
        ``nn.LSTM``: it then takes raw texts too.
    tokenizer : str, os.PathLike, tokenizer or None, default=None
        A ``transformers`` tokenizer or a directory holding one. None: from
        the model's directory (for an instance, its ``name_or_path``); a model
        without a tokenizer still takes token ids (dicts of arrays).
    max_length : int or None, default=None
        The most tokens of a text, special tokens included; longer texts are
        truncated, with a warning giving how many. None: the tokenizer's
        ``model_max_length``, at most 512, at most the model's positions
        (``max_position_embeddings``) and a sentence-transformers
        directory's ``max_seq_length``; more than the model's positions, or
        fewer than the tokenizer's special tokens and one token of text, is
        a ValueError at ``fit``.
    pooling : {"mean", "first", "cls"}, default="mean"
        How the token states become one vector per text: their mean over the
        attention mask (sentence-transformers' mean pooling), or the first
        token's state (``"cls"`` is a synonym, BERT's ``[CLS]``). Ignored by
        ``...ForSequenceClassification`` models, which pool themselves.
    local_files_only : bool, default=True
        Load only from local files: nothing contacts the Hugging Face Hub. A
        missing directory or file is an error naming the path.
    optimizer : type or None, default=None
        The ``torch.optim.Optimizer`` subclass that trains the network; None
        is ``torch.optim.AdamW`` (Loshchilov and Hutter, 2019), as in Hugging
        Face's fine-tuning examples. Its learning rate is the estimator's
        ``lr`` (with ``shared_lr_scale`` and ``layer_decay``).
    optimizer_params : dict or None, default=None
        Keyword arguments of ``optimizer`` other than the learning rate and
        the parameters, e.g. ``{"weight_decay": 0.0}`` (Hugging Face's
        ``Trainer`` default; AdamW's own is 0.01) or
        ``{"betas": (0.9, 0.98)}``; skorch's ``optimizer__*`` settings.
    gradient_checkpointing : bool, default=False
        Trade compute for memory in training (Chen et al., 2016): each
        transformer block keeps only its input in the forward pass and runs
        again in the backward pass, so the activations of one block at a
        time are held, at the cost of about one more forward pass per step.
        Through the model's own ``gradient_checkpointing_enable`` (named
        ``activation_checkpointing_enable`` in recent ``transformers``),
        non-reentrant, so frozen parts and LoRA adapters train as without
        it; fitted weights and predictions are the same. Prediction and a
        frozen encoder (computed once, in evaluation mode) are unaffected.
        True for a model whose class does not support it, or a network of
        one's own, is a ValueError at ``fit``. False leaves the model as it
        is given.

    See Also
    --------
    sktransfer.TransferClassifier : Takes it as ``net``.

    Notes
    -----
    Texts are tokenized once per call and padded to ``max_length`` in
    memory; each batch is cut to its longest text before the encoder runs
    (prediction also groups the texts by length), and the predictions equal
    those of padding every text to ``max_length`` (the attention mask hides
    padding).

    References
    ----------
    Wolf et al., "Transformers: State-of-the-art natural language processing",
    EMNLP 2020 (system demonstrations). Reimers and Gurevych,
    "Sentence-BERT", EMNLP 2019 (mean pooling). Chen et al., "Training deep
    nets with sublinear memory cost", arXiv:1604.06174, 2016 (gradient
    checkpointing).

    Examples
    --------
    >>> from sktransfer import HuggingFaceNet, TransferClassifier
    >>> clf = TransferClassifier(HuggingFaceNet("path/to/model", max_length=64))
    >>> clf.get_params()["net__pooling"]
    'mean'
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "tokenizer": "no_validation",
        "max_length": [int, None],
        "pooling": [StrOptions(set(_POOLING))],
        "local_files_only": ["boolean"],
        "optimizer": "no_validation",
        "optimizer_params": [dict, None],
        "gradient_checkpointing": ["boolean"],
    }

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        max_length: int | None = None,
        pooling: str = "mean",
        local_files_only: bool = True,
        optimizer: type | None = None,
        optimizer_params: dict | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        self.local_files_only = local_files_only
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.gradient_checkpointing = gradient_checkpointing

    def set_params(self, **params):
        """Set the spec's parameters (``max_length``, ``pooling``, ...).

        Parameters
        ----------
        **params : dict
            The spec's parameters by name.

        Returns
        -------
        self : HuggingFaceNet

        Raises
        ------
        ValueError
            For any other name, e.g. a skorch setting (``optimizer``), with the
            estimator parameters that set training instead.
        """
        unknown = sorted(set(params) - set(self.get_params(deep=False)))
        if unknown:
            raise ValueError(not_a_skorch_net(self, unknown))
        return super().set_params(**params)

    def _check(self):
        check_spec(self, _POOLING)
        if (
            self.gradient_checkpointing
            and isinstance(self.model, nn.Module)
            and not is_hf_model(self.model)
        ):
            refuse_own_network(self.model)

    def load_tokenizer(self):
        """Return the tokenizer, or None for a model without one.

        Returns
        -------
        tokenizer : transformers.PreTrainedTokenizerBase or None
            ``tokenizer`` as given, else loaded from its path or the model's
            directory (local files only by default); None for a model instance
            without a tokenizer, which then takes token ids only.
        """
        tokenizer = self.tokenizer
        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            return tokenizer
        path = tokenizer
        if path is None and isinstance(self.model, (str, os.PathLike)):
            path = self.model  # the model's directory (an error if missing)
        elif path is None:
            path = getattr(self.model, "name_or_path", None)
            if not path or not os.path.isdir(path):
                return None  # an instance without a tokenizer: token ids only
        return _load(
            "tokenizer", os.fspath(path), local_files_only=self.local_files_only
        )

    def resolved_max_length(self, tokenizer):
        """Return ``max_length``, or the default: the most tokens the model takes.

        Parameters
        ----------
        tokenizer : transformers.PreTrainedTokenizerBase or None
            Its ``model_max_length`` is a limit when ``max_length`` is None.

        Returns
        -------
        max_length : int
            The number of tokens texts are truncated to. None gives the
            smallest of 512, the tokenizer's ``model_max_length``, the
            ``max_seq_length`` of a sentence-transformers directory
            (``sentence_bert_config.json``) and the model's position limit
            (``max_position_embeddings``, less RoBERTa's padding offset).

        Raises
        ------
        ValueError
            If ``max_length`` is more than the model's position limit, not an
            int, or less than the tokenizer's special tokens and one token.
        """
        return resolve_max_length(self, tokenizer)

    def build(self):
        """Return a fresh :class:`TransformerNet` holding a copy of the weights.

        Returns
        -------
        module : TransformerNet or transformers.PreTrainedModel
            The encoder with its pooling and a new head, or, for a
            ``...ForSequenceClassification`` model, a copy of the model.
        """
        self._check()
        model = self.model
        if isinstance(model, (str, os.PathLike)):
            model = _load("model", os.fspath(model), self.local_files_only)
        elif is_hf_model(model):
            model = copy.deepcopy(model)
        elif isinstance(model, nn.Module) and self.tokenizer is not None:
            return TokenNet(copy.deepcopy(model))  # the user's network
        else:
            msg = (
                "HuggingFaceNet(model) needs a local directory in the "
                "save_pretrained layout, a transformers model instance, or a "
                "torch.nn.Module with tokenizer=...; got "
                f"{model!r} of type {type(model).__name__}."
            )
            raise TypeError(msg)
        if self.gradient_checkpointing:
            enable_checkpointing(model)  # _hf_settings.py
        return TransformerNet(model, pooling=self.pooling)


def _is_sequence_classifier(model):
    return type(model).__name__.endswith("ForSequenceClassification")


def classifier_layout(model):
    """How a ``...ForSequenceClassification`` model feeds its classifier, or None.

    ``"pooler"``: BERT-like (``bert``, ``dropout``, ``classifier``): the base
    model's pooler output, dropout, the classifier. ``"first"``:
    DistilBERT-like (``distilbert``, ``pre_classifier``, ``dropout``,
    ``classifier``): the first token's state, ``pre_classifier``, ReLU,
    dropout, the classifier. None for other layouts (their head runs inside
    the model's own ``forward``).
    """
    children = model._modules
    base = children.get(getattr(model, "base_model_prefix", ""))
    if base is None or not (
        isinstance(children.get("classifier"), nn.Linear)
        and isinstance(children.get("dropout"), nn.Dropout)
    ):
        return None
    if len(children) == 4 and isinstance(children.get("pre_classifier"), nn.Linear):
        return "first"
    if len(children) == 3 and getattr(base, "pooler", None) is not None:
        return "pooler"
    return None


class TransformerNet(nn.Module):
    """A ``transformers`` model with pooling and a head, on packed token arrays.

    Its input is a float or integer tensor of shape (batch, 2, length): the
    token ids and the attention mask of each text, padded on the right (what
    the estimators make of texts and token dicts). Each batch is cut to its
    longest text before the model runs. The model's top-level submodules are
    this module's own (``embeddings``, ``encoder``, ... or ``bert``,
    ``classifier``), so parameter names are the model's; a base model gets a
    ``head`` (``nn.Linear``) on the pooled hidden states.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model, used as it is (not copied).
    pooling : {"mean", "first", "cls"}, default="mean"
        See :class:`HuggingFaceNet`.
    """

    def __init__(self, model, pooling="mean"):
        super().__init__()
        # The model's own submodules, parameters and buffers are this module's
        # (the same dicts, so a head replaced here is replaced in the model);
        # the model object itself is kept outside the module tree.
        self.__dict__["model"] = model
        for name in ("_parameters", "_buffers", "_modules"):
            self.__dict__[name] = getattr(model, name)
        self.__dict__["_non_persistent_buffers_set"] = model._non_persistent_buffers_set
        self.pooling = pooling
        self.sequence_classifier = _is_sequence_classifier(model)
        self.layout = classifier_layout(model) if self.sequence_classifier else None
        # Submodules no output reads: a base model's pooler (mean or first pooling).
        self.unread = () if self.sequence_classifier else ("pooler",)
        if not self.sequence_classifier:
            self.head = nn.Linear(model.config.hidden_size, 2)

    def train(self, mode=True):
        """Set training mode; frozen parts of the model stay in evaluation mode.

        A submodule whose parameters are all frozen (``requires_grad=False``)
        is evaluated without dropout even while the rest trains: a frozen
        language model computes the same features in every epoch, as in
        evaluation, and a new head on it learns from those.
        """
        super().train(mode)
        self.__dict__["model"].training = mode
        if mode:
            for name, child in self.named_children():
                if name != "head":
                    eval_frozen(child)
        return self

    def encode(self, X):
        """Return the pooled hidden states of packed tokens ``X`` (batch, hidden)."""
        inputs = model_inputs(self.__dict__["model"], X, *unpack(X))
        mask = inputs["attention_mask"]
        states = self.__dict__["model"](**inputs).last_hidden_state
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(states.dtype)
            return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return states[:, 0]

    def forward(self, X):
        """Return the head's outputs (the logits of a classifier) for ``X``."""
        if self.sequence_classifier and self.layout is None:
            model = self.__dict__["model"]
            return model(**model_inputs(model, X, *unpack(X))).logits
        return self.forward_head(self.forward_features(X))

    def forward_features(self, X):
        """Return the head's input for packed tokens ``X`` (batch, hidden).

        With :meth:`forward_head`, the cut this network declares, as timm's
        models do: ``forward(X)`` is ``forward_head(forward_features(X))``. A
        fit whose encoder is frozen computes ``forward_features`` once and
        trains the head on its outputs (the frozen-stage cache). The pooled
        states for a base model; for a ``...ForSequenceClassification``
        model, what its own ``forward`` gives the layers after the base model
        (:func:`classifier_layout`: the pooler's output, or the first token's
        state); not available for other layouts, which pool and classify in
        one call.
        """
        if not self.sequence_classifier:
            return self.encode(X)
        if self.layout is None:
            msg = (
                f"{type(self.__dict__['model']).__name__} pools and classifies "
                "in one call"
            )
            raise NotImplementedError(msg)
        base = self._modules[self.__dict__["model"].base_model_prefix]
        out = base(**model_inputs(base, X, *unpack(X)))
        return out.pooler_output if self.layout == "pooler" else out[0][:, 0]

    def forward_head(self, features):
        """Return the head's outputs for ``features`` (:meth:`forward_features`)."""
        if not self.sequence_classifier:
            return self.head(features)
        if self.layout == "first":
            features = torch.relu(self.pre_classifier(features))
        elif self.layout is None:
            return self.forward_features(features)  # raises NotImplementedError
        return self.classifier(self.dropout(features))

    def block_depths(self, head):
        """Depth of each shared parameter below the head, counting blocks as layers.

        The layers are, first to last: what comes before the transformer
        blocks (the embeddings), each block (``encoder.layer.N``, ``h.N``,
        ``layers.N``), and what comes after them (a final norm; a pooler that
        the output reads). The last has depth 1. A base model's pooler, which
        mean or first-token pooling never reads, is no layer: it gets the
        depth of the last block. Returned by parameter ``id``, for layer decay
        (as timm's ``param_groups_layer_decay`` groups blocks by
        ``group_matcher``).
        """
        from ._layers import is_under

        pattern = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
        position = {}  # parameter id -> (stage, block): 0 before, 1 blocks, 2 after
        seen_block = False
        unread = []
        for name, param in self.named_parameters():
            if is_under(name, head):
                continue
            if is_under(name, getattr(self, "unread", ())):
                unread.append(id(param))
                continue
            match = pattern.search(name)
            if match:
                seen_block = True
                position[id(param)] = (1, int(match.group(1)))
            else:
                position[id(param)] = (2 if seen_block else 0, 0)
        order = sorted(set(position.values()))
        depth = {key: len(order) - i for i, key in enumerate(order)}
        depths = {pid: depth[key] for pid, key in position.items()}
        return {**depths, **dict.fromkeys(unread, 1)}


def as_spec(net):
    """Return ``net`` as a :class:`HuggingFaceNet`, or None for another kind of net."""
    if isinstance(net, HuggingFaceNet):
        return net
    if isinstance(net, (str, os.PathLike)) or is_hf_model(net):
        return HuggingFaceNet(net)
    return None


def net_params(defaults, spec):
    """Training settings of a Hugging Face net: the defaults, at a fine-tuning pace.

    AdamW (or ``spec.optimizer``, with ``spec.optimizer_params``) at
    ``lr=5e-5``, batches of 16 and 10 epochs, the settings of Hugging Face's
    fine-tuning examples (Devlin et al., BERT, 2019, use 2e-5 to 5e-5 for 2
    to 4 epochs on larger data sets); a new head on a frozen encoder learns
    faster with a larger ``lr``.
    """
    optimizer_params = {
        f"optimizer__{key}": value
        for key, value in (spec.optimizer_params or {}).items()
    }
    return {
        **defaults,
        "optimizer": spec.optimizer or torch.optim.AdamW,
        "lr": 5e-5,
        "batch_size": 16,
        "max_epochs": 10,
        **optimizer_params,
    }
